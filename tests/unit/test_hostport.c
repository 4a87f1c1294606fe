/* Unit tests of common/hostport: the one host:port grammar, table-driven. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "hostport.h"
#include "util.h"

static void test_parse(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        unsigned flags;
        int rc;
        const char *host;
        uint16_t port;
    } cases[] = {
        {"127.0.0.1:25", SL_HP_NEED_PORT, 0, "127.0.0.1", 25},
        {"[::1]:9100", SL_HP_NEED_PORT, 0, "::1", 9100},
        {"localhost:9100", SL_HP_NEED_PORT, 0, "localhost", 9100},
        {"mx.example:587", SL_HP_NEED_PORT, 0, "mx.example", 587},
        {"mx.example", 0, 0, "mx.example", 53},
        {"::1", 0, 0, "::1", 53},
        {"[::1]", 0, 0, "::1", 53},
        {"*:25", SL_HP_NEED_PORT, 0, "*", 25},
        {"127.0.0.1:00025", SL_HP_NEED_PORT, 0, "127.0.0.1", 25},
        {"127.0.0.1:65535", SL_HP_NEED_PORT, 0, "127.0.0.1", 65535},
        {"127.0.0.1:0", SL_HP_LISTEN, 0, "127.0.0.1", 0},
        {"127.0.0.1:0", SL_HP_NEED_PORT, SL_EADDRESS, NULL, 0},
        {"127.0.0.1:65536", SL_HP_LISTEN, SL_EADDRESS, NULL, 0},
        {"127.0.0.1:", SL_HP_LISTEN, SL_EADDRESS, NULL, 0},
        {"127.0.0.1:-1", SL_HP_LISTEN, SL_EADDRESS, NULL, 0},
        {"127.0.0.1: 1", SL_HP_LISTEN, SL_EADDRESS, NULL, 0},
        {"127.0.0.1:1x", SL_HP_LISTEN, SL_EADDRESS, NULL, 0},
        {"127.0.0.1", SL_HP_NEED_PORT, SL_EADDRESS, NULL, 0},
        {"::1", SL_HP_NEED_PORT, SL_EADDRESS, NULL, 0},
        {"::1:25", 0, 0, "::1:25", 53}, /* a bare v6 literal, not a port */
        {"1:2", 0, 0, "1", 2},
        {"[::1:25", 0, SL_EADDRESS, NULL, 0},
        {"[::1]x", 0, SL_EADDRESS, NULL, 0},
        {":25", 0, SL_EADDRESS, NULL, 0},
        {"", 0, SL_EADDRESS, NULL, 0},
        {"a b:25", 0, SL_EADDRESS, NULL, 0},
        {"a/b:25", 0, SL_EADDRESS, NULL, 0},
        {"x:y:z", 0, SL_EADDRESS, NULL, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *host = NULL;
        uint16_t port = 7;
        int rc = sl_hostport_parse(cases[i].s, cases[i].flags, 53, &host, &port);
        if (rc != cases[i].rc)
            fail_msg("'%s': rc %d, want %d", cases[i].s, rc, cases[i].rc);
        if (rc == 0) {
            if (strcmp(host, cases[i].host) || port != cases[i].port)
                fail_msg("'%s': got %s port %u", cases[i].s, host, port);
        } else {
            assert_null(host);
        }
        free(host);
    }
}

static void test_addr(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        unsigned flags;
        int family; /* 0: refused */
        const char *ip;
        uint16_t port;
    } cases[] = {
        {"127.0.0.1:25", 0, AF_INET, "127.0.0.1", 25},
        {"[::1]:0", SL_HP_LISTEN, AF_INET6, "::1", 0},
        {"localhost:9100", 0, AF_INET, "127.0.0.1", 9100},
        {"*:587", 0, AF_INET, "0.0.0.0", 587},
        {"name.invalid:25", 0, 0, NULL, 0}, /* names only with SL_HP_RESOLVE */
        {"127.0.0.1", 0, 0, NULL, 0},        /* the port is required */
        {"300.1.1.1:25", 0, 0, NULL, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sockaddr_storage ss;
        int rc = sl_hostport_addr(cases[i].s, cases[i].flags, &ss);
        if (!cases[i].family) {
            if (rc != SL_EADDRESS)
                fail_msg("'%s' accepted", cases[i].s);
            continue;
        }
        if (rc != 0)
            fail_msg("'%s' refused: %d", cases[i].s, rc);
        assert_int_equal(ss.ss_family, cases[i].family);
        char txt[INET6_ADDRSTRLEN];
        uint16_t port;
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, txt, sizeof txt);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, txt, sizeof txt);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
        assert_string_equal(txt, cases[i].ip);
        assert_int_equal(port, cases[i].port);
    }
    /* A name resolves only when the caller may block. */
    struct sockaddr_storage ss;
    assert_int_equal(sl_hostport_addr("localhost:1", SL_HP_RESOLVE, &ss), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_addr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
