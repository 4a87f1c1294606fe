/*
 * fuzz_config - libFuzzer harness for common/config's sl_config_parse():
 * the YAML loader, the key walkers and the validators, on any bytes.
 *
 * Invariants: it never crashes or leaks; it returns either 0 with a
 * config and no error, or SL_ECONFIG with no config and an error message
 * that starts "fuzz.yaml:LINE:" (LINE a positive number) - every message
 * an operator sees must say where. A config that parses has its lookups
 * working (sl_config_pool/shaping/route on names it holds).
 *
 * The SLUICE_* environment overrides are cleared once so that the result
 * depends on the input alone.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "util.h"

#define FAIL(...)                                                                          \
    do {                                                                                   \
        fprintf(stderr, "fuzz_config: invariant: " __VA_ARGS__);                          \
        fputc('\n', stderr);                                                               \
        abort();                                                                           \
    } while (0)

#define NAME "fuzz.yaml"

extern char **environ;

static void clear_env(void)
{
    for (;;) {
        char *victim = NULL;
        for (char **e = environ; *e; e++)
            if (strncmp(*e, "SLUICE_", 7) == 0) {
                victim = *e;
                break;
            }
        if (!victim)
            return;
        char name[256];
        size_t n = strcspn(victim, "=");
        snprintf(name, sizeof(name), "%.*s", (int)(n < 255 ? n : 255), victim);
        unsetenv(name);
    }
}

static void check_error(const char *err)
{
    if (!err)
        FAIL("SL_ECONFIG without a message");
    size_t nl = strlen(NAME);
    if (strncmp(err, NAME ":", nl + 1) != 0)
        FAIL("message does not name the file: %s", err);
    const char *p = err + nl + 1;
    if (!isdigit((unsigned char)*p) || *p == '0')
        FAIL("message has no line number: %s", err);
    while (isdigit((unsigned char)*p))
        p++;
    if (*p != ':')
        FAIL("message has no line number: %s", err);
}

static void check_config(const sl_config *cfg)
{
    for (size_t i = 0; i < cfg->n_pools; i++)
        if (sl_config_pool(cfg, cfg->pools[i].name) == NULL)
            FAIL("pool '%s' is not found by name", cfg->pools[i].name);
    for (size_t i = 0; i < cfg->n_shaping; i++)
        if (sl_config_shaping(cfg, cfg->shaping[i].site) == NULL)
            FAIL("shaping '%s' is not found by name", cfg->shaping[i].site);
    char *t = sl_config_topic(cfg, "jobs");
    free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool once;
    if (!once) {
        clear_env();
        once = true;
    }
    sl_config *cfg = (sl_config *)1;
    char *err = (char *)1;
    int rc = sl_config_parse(NAME, (const char *)data, size, &cfg, &err);
    if (rc == 0) {
        if (!cfg)
            FAIL("0 without a config");
        if (err)
            FAIL("0 with an error: %s", err);
        check_config(cfg);
        sl_config_free(cfg);
    } else {
        if (rc != SL_ECONFIG)
            FAIL("returned %d", rc);
        if (cfg)
            FAIL("SL_ECONFIG with a config");
        check_error(err);
        free(err);
    }
    return 0;
}
