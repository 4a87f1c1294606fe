/*
 * smtp_server_cmd - the protocol half of the SMTP server engine (see
 * smtp_server.h for the rules it enforces and smtp_server_int.h for the
 * split): command lines and their verbs, the envelope paths, AUTH, the
 * DATA body and the command and data deadlines.
 *
 * Threads: the server's loop thread only.
 */
#define _GNU_SOURCE /* strcasestr */
#include "smtp_server_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "log.h"

static void deadline_stop(smtpd_session *s);

/* ------------------------------------------------------------- parsing */

static bool is_verb(const char *line, size_t vlen, const char *verb)
{
    return strlen(verb) == vlen && strncasecmp(line, verb, vlen) == 0;
}

/*
 * Parse "<path>" at *pp. On success store the address (source route
 * dropped) in *addr and advance *pp past '>'. Returns 0, or the reply
 * code for the error with *why set.
 */
static int parse_path(const char **pp, char **addr, bool null_ok, bool utf8, const char **why)
{
    const char *p = *pp;
    if (*p != '<') {
        *why = "5.5.4 Syntax: address must be in <>";
        return 501;
    }
    p++;
    const char *start = p;
    bool quoted = false;
    bool nonascii = false;
    for (;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == 0) {
            *why = "5.5.4 Syntax: missing >";
            return 501;
        }
        if (c < 0x20 || c == 0x7f) {
            *why = "5.1.7 Invalid character in address";
            return 553;
        }
        if (c >= 0x80)
            nonascii = true;
        if (quoted && c == '\\' && p[1]) {
            p++;
            continue;
        }
        if (c == '"')
            quoted = !quoted;
        else if (!quoted && c == '>')
            break;
        else if (!quoted && (c == ' ' || c == '<')) {
            *why = "5.1.7 Invalid character in address";
            return 553;
        }
    }
    size_t len = (size_t)(p - start);
    if (len + 2 > SMTPD_PATH_MAX) {
        *why = "5.1.7 Address too long";
        return 553;
    }
    /* A source route "@a,@b:user@d" must be accepted and ignored. */
    if (len > 0 && *start == '@') {
        const char *colon = memchr(start, ':', len);
        if (!colon) {
            *why = "5.1.7 Invalid source route";
            return 553;
        }
        len -= (size_t)(colon + 1 - start);
        start = colon + 1;
    }
    if (nonascii && !utf8) {
        *why = "5.6.7 Non-ASCII address requires SMTPUTF8";
        return 553;
    }
    if (len == 0) {
        if (!null_ok) {
            *why = "5.1.3 Empty address not allowed";
            return 501;
        }
    } else {
        const char *at = NULL;
        for (const char *q = start + len; q > start; q--)
            if (q[-1] == '@') {
                at = q - 1;
                break;
            }
        bool postmaster = len == 10 && strncasecmp(start, "postmaster", 10) == 0;
        if (!postmaster && (!at || at == start || at == start + len - 1)) {
            *why = "5.1.3 Address must be local-part@domain";
            return 501;
        }
        if (at) {
            for (const char *q = at + 1; q < start + len; q++) {
                unsigned char c = (unsigned char)*q;
                if (!(c >= 0x80 || c == '.' || c == '-' || c == '[' || c == ']' || c == ':' ||
                      (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
                    *why = "5.1.2 Invalid domain in address";
                    return 553;
                }
            }
        }
    }
    *addr = xstrndup(start, len);
    *pp = p + 1;
    return 0;
}

static bool all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* ------------------------------------------------------------ commands */

static void cmd_helo(smtpd_session *s, char *args, bool esmtp)
{
    const smtpd_config *c = &s->srv->cfg;
    if (!args || !*args || strchr(args, ' ')) {
        smtpd__reply_error(s, 501,
                           esmtp ? "5.5.4 Syntax: EHLO hostname" : "5.5.4 Syntax: HELO hostname");
        return;
    }
    smtpd__trx_reset(s);
    free(s->helo);
    s->helo = xstrdup(args);
    s->env.esmtp = esmtp;
    smtpd__enter_state(s, S_HELO);
    smtpd__env_sync(s);
    if (!esmtp) {
        sl_buf_printf(&s->out, "250 %s\r\n", s->srv->hostname);
        return;
    }
    bool tls = s->tls != NULL;
    sl_buf_printf(&s->out, "250-%s\r\n", s->srv->hostname);
    if (!c->no_pipelining)
        sl_buf_puts(&s->out, "250-PIPELINING\r\n");
    sl_buf_printf(&s->out, "250-SIZE %zu\r\n", c->max_message_size);
    if (!tls && s->mode == SMTPD_STARTTLS && c->tls_ctx)
        sl_buf_puts(&s->out, "250-STARTTLS\r\n");
    if (tls && s->srv->hooks.on_auth && !s->auth_user)
        sl_buf_puts(&s->out, "250-AUTH PLAIN LOGIN\r\n");
    sl_buf_puts(&s->out, "250-ENHANCEDSTATUSCODES\r\n");
    if (!c->no_smtputf8)
        sl_buf_puts(&s->out, "250-SMTPUTF8\r\n");
    sl_buf_puts(&s->out, "250 8BITMIME\r\n");
}

static bool need_helo(smtpd_session *s)
{
    if (s->state == S_CONNECTED) {
        smtpd__reply_error(s, 503, "5.5.1 Error: send HELO/EHLO first");
        return false;
    }
    return true;
}

static void cmd_mail(smtpd_session *s, char *args)
{
    const smtpd_config *c = &s->srv->cfg;
    if (!need_helo(s))
        return;
    if (s->state != S_HELO) {
        smtpd__reply_error(s, 503, "5.5.1 Error: nested MAIL command");
        return;
    }
    if (c->require_tls && !s->tls) {
        smtpd__reply_error(s, 530, "5.7.0 Must issue a STARTTLS command first");
        return;
    }
    if (c->require_auth && !s->auth_user) {
        smtpd__reply_error(s, 530, "5.7.0 Authentication required");
        return;
    }
    if (!args || strncasecmp(args, "FROM:", 5) != 0) {
        smtpd__reply_error(s, 501, "5.5.4 Syntax: MAIL FROM:<address>");
        return;
    }
    const char *p = args + 5;
    while (*p == ' ')
        p++;
    /* SMTPUTF8 may appear after the path, so look for it first. */
    bool utf8 = false;
    if (!c->no_smtputf8) {
        const char *q = strchr(p, '>');
        for (q = q ? q + 1 : p; (q = strcasestr(q, "SMTPUTF8")) != NULL; q += 8)
            if (q[-1] == ' ' && (q[8] == 0 || q[8] == ' '))
                utf8 = true;
    }
    char *addr = NULL;
    const char *why = NULL;
    int code = parse_path(&p, &addr, true, utf8, &why);
    if (code) {
        smtpd__reply_error(s, code, why);
        return;
    }
    int64_t size = -1;
    bool body8 = false, smtputf8 = false;
    while (*p) {
        if (*p != ' ') {
            free(addr);
            smtpd__reply_error(s, 501, "5.5.4 Syntax: MAIL FROM:<address> [parameters]");
            return;
        }
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, ' ');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char *kv = xstrndup(p, n);
        p += n;
        char *val = strchr(kv, '=');
        if (val)
            *val++ = 0;
        bool bad = false;
        if (strcasecmp(kv, "SIZE") == 0 && val && all_digits(val) && strlen(val) <= 18) {
            size = strtoll(val, NULL, 10);
        } else if (strcasecmp(kv, "BODY") == 0 && val &&
                   (strcasecmp(val, "7BIT") == 0 || strcasecmp(val, "8BITMIME") == 0)) {
            body8 = strcasecmp(val, "8BITMIME") == 0;
        } else if (strcasecmp(kv, "SMTPUTF8") == 0 && !val && !c->no_smtputf8) {
            smtputf8 = true;
        } else if (strcasecmp(kv, "AUTH") == 0 && val) {
            /* RFC 4954 5: accepted and ignored. */
        } else {
            bad = true;
        }
        if (bad) {
            char *msg = xasprintf("5.5.4 Unsupported parameter: %.60s", kv);
            free(kv);
            free(addr);
            smtpd__reply_error(s, 555, msg);
            free(msg);
            return;
        }
        free(kv);
    }
    if (size >= 0 && (uint64_t)size > c->max_message_size) {
        free(addr);
        smtpd__reply(s, 552, "5.3.4 Message size exceeds fixed maximum message size");
        return;
    }
    s->env.size_declared = size;
    s->env.body_8bit = body8;
    s->env.smtputf8 = smtputf8;
    smtpd__ask(s, Q_MAIL, addr);
}

static void cmd_rcpt(smtpd_session *s, char *args)
{
    if (!need_helo(s))
        return;
    if (s->state != S_MAIL && s->state != S_RCPT) {
        smtpd__reply_error(s, 503, "5.5.1 Error: need MAIL command");
        return;
    }
    if (!args || strncasecmp(args, "TO:", 3) != 0) {
        smtpd__reply_error(s, 501, "5.5.4 Syntax: RCPT TO:<address>");
        return;
    }
    if (s->env.nrcpt >= s->srv->cfg.max_rcpt) {
        smtpd__reply(s, 452, "4.5.3 Too many recipients");
        return;
    }
    const char *p = args + 3;
    while (*p == ' ')
        p++;
    char *addr = NULL;
    const char *why = NULL;
    int code = parse_path(&p, &addr, false, s->env.smtputf8, &why);
    if (code) {
        smtpd__reply_error(s, code, why);
        return;
    }
    while (*p == ' ')
        p++;
    if (*p) {
        free(addr);
        smtpd__reply_error(s, 555, "5.5.4 Unsupported parameter");
        return;
    }
    smtpd__ask(s, Q_RCPT, addr);
}

static void cmd_data(smtpd_session *s, char *args)
{
    if (!need_helo(s))
        return;
    if (args) {
        smtpd__reply_error(s, 501, "5.5.4 Syntax: DATA");
        return;
    }
    if (s->state == S_MAIL) {
        smtpd__reply(s, 554, "5.5.1 Error: no valid recipients");
        return;
    }
    if (s->state != S_RCPT) {
        smtpd__reply_error(s, 503, "5.5.1 Error: need RCPT command");
        return;
    }
    sl_buf_reset(&s->msg);
    s->line_len = 0;
    s->data_bytes = 0;
    s->bad_newline = s->bad_nul = s->long_line = s->too_big = false;
    smtpd__reply(s, 354, "End data with <CR><LF>.<CR><LF>");
    smtpd__enter_state(s, S_DATA);
}

static void cmd_starttls(smtpd_session *s, char *args)
{
    const smtpd_config *c = &s->srv->cfg;
    if (s->tls || s->mode != SMTPD_STARTTLS || !c->tls_ctx) {
        smtpd__reply_error(s, 502, "5.5.1 STARTTLS not available");
        return;
    }
    if (args) {
        smtpd__reply_error(s, 501, "5.5.4 Syntax: STARTTLS");
        return;
    }
    smtpd__reply(s, 220, "2.0.0 Ready to start TLS");
    smtpd__session_flush(s);
    /* CVE-2011-0411: whatever the client pipelined after STARTTLS was sent
     * in clear text and must not be read as if it came through TLS. */
    sl_buf_reset(&s->in);
    s->tls = sl_tls_new(c->tls_ctx, true, NULL);
    /* RFC 3207 4.2: forget everything learnt before TLS. */
    smtpd__trx_reset(s);
    free(s->helo);
    s->helo = NULL;
    s->state = S_CONNECTED;
    smtpd__env_sync(s);
}

static bool b64_decode(const char *in, char **out, size_t *outlen)
{
    size_t n = strlen(in);
    if (n % 4 != 0)
        return false;
    if (n == 0) {
        *out = xstrdup("");
        *outlen = 0;
        return true;
    }
    unsigned char *buf = xmalloc(n / 4 * 3 + 1);
    int r = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)n);
    if (r < 0) {
        free(buf);
        return false;
    }
    size_t len = (size_t)r;
    if (in[n - 1] == '=')
        len--;
    if (in[n - 2] == '=')
        len--;
    buf[len] = 0;
    *out = (char *)buf;
    *outlen = len;
    return true;
}

static void auth_ask(smtpd_session *s, const char *user, size_t ulen, const char *pass, size_t plen)
{
    if (memchr(user, 0, ulen) || memchr(pass, 0, plen) || ulen == 0) {
        smtpd__reply_error(s, 535, "5.7.8 Authentication credentials invalid");
        smtpd__enter_state(s, s->auth_return);
        return;
    }
    char *arg = xmalloc(ulen + plen + 2);
    memcpy(arg, user, ulen);
    arg[ulen] = 0;
    memcpy(arg + ulen + 1, pass, plen);
    arg[ulen + 1 + plen] = 0;
    smtpd__ask(s, Q_AUTH, arg);
}

/* The decoded PLAIN response: authzid NUL authcid NUL password. */
static void auth_plain(smtpd_session *s, const char *b64)
{
    char *d;
    size_t n;
    if (!b64_decode(b64, &d, &n)) {
        smtpd__reply_error(s, 501, "5.5.2 Cannot decode response");
        smtpd__enter_state(s, s->auth_return);
        return;
    }
    char *z1 = memchr(d, 0, n);
    char *z2 = z1 ? memchr(z1 + 1, 0, n - (size_t)(z1 + 1 - d)) : NULL;
    if (!z1 || !z2 || (z1 != d && (strcmp(d, z1 + 1) != 0))) {
        OPENSSL_cleanse(d, n);
        free(d);
        smtpd__reply_error(s, 535, "5.7.8 Authentication credentials invalid");
        smtpd__enter_state(s, s->auth_return);
        return;
    }
    auth_ask(s, z1 + 1, (size_t)(z2 - z1 - 1), z2 + 1, n - (size_t)(z2 + 1 - d));
    OPENSSL_cleanse(d, n);
    free(d);
}

static void cmd_auth(smtpd_session *s, char *args)
{
    if (!s->srv->hooks.on_auth) {
        smtpd__reply_error(s, 502, "5.5.1 AUTH not available");
        return;
    }
    if (!s->tls) {
        smtpd__reply_error(s, 538,
                           "5.7.11 Encryption required for requested authentication mechanism");
        return;
    }
    if (!need_helo(s))
        return;
    if (s->auth_user) {
        smtpd__reply_error(s, 503, "5.5.1 Already authenticated");
        return;
    }
    if (s->state != S_HELO) {
        smtpd__reply_error(s, 503, "5.5.1 AUTH not allowed during a mail transaction");
        return;
    }
    if (!args) {
        smtpd__reply_error(s, 501, "5.5.4 Syntax: AUTH mechanism");
        return;
    }
    char *initial = strchr(args, ' ');
    if (initial)
        *initial++ = 0;
    s->auth_return = S_HELO;
    if (strcasecmp(args, "PLAIN") == 0) {
        if (!initial) {
            smtpd__reply(s, 334, "");
            smtpd__enter_state(s, S_AUTH_PLAIN);
        } else {
            auth_plain(s, strcmp(initial, "=") == 0 ? "" : initial);
        }
    } else if (strcasecmp(args, "LOGIN") == 0) {
        if (!initial) {
            smtpd__reply(s, 334, "VXNlcm5hbWU6"); /* "Username:" */
            smtpd__enter_state(s, S_AUTH_USER);
        } else {
            char *u;
            size_t n;
            if (!b64_decode(initial, &u, &n)) {
                smtpd__reply_error(s, 501, "5.5.2 Cannot decode response");
                return;
            }
            free(s->login_user);
            s->login_user = u;
            smtpd__reply(s, 334, "UGFzc3dvcmQ6"); /* "Password:" */
            smtpd__enter_state(s, S_AUTH_PASS);
        }
    } else {
        smtpd__reply_error(s, 504, "5.5.4 Unrecognized authentication type");
    }
}

/* A line typed in answer to a 334 challenge. */
static void auth_line(smtpd_session *s, char *line)
{
    if (strcmp(line, "*") == 0) {
        smtpd__reply(s, 501, "5.7.0 Authentication cancelled");
        smtpd__enter_state(s, s->auth_return);
        return;
    }
    if (s->state == S_AUTH_PLAIN) {
        auth_plain(s, line);
        return;
    }
    char *d;
    size_t n;
    if (!b64_decode(line, &d, &n)) {
        smtpd__reply_error(s, 501, "5.5.2 Cannot decode response");
        smtpd__enter_state(s, s->auth_return);
        return;
    }
    if (s->state == S_AUTH_USER) {
        free(s->login_user);
        s->login_user = d;
        smtpd__reply(s, 334, "UGFzc3dvcmQ6");
        smtpd__enter_state(s, S_AUTH_PASS);
        return;
    }
    char *user = s->login_user;
    s->login_user = NULL;
    auth_ask(s, user, strlen(user), d, n);
    free(user);
    OPENSSL_cleanse(d, n);
    free(d);
}

static void handle_line(smtpd_session *s, char *line, size_t len)
{
    if (s->state == S_AUTH_PLAIN || s->state == S_AUTH_USER || s->state == S_AUTH_PASS) {
        auth_line(s, line);
        return;
    }
    size_t vlen = strcspn(line, " ");
    char *args = line[vlen] ? line + vlen + 1 : NULL;
    if (args) {
        /* Trailing spaces are common and harmless; an empty argument is
         * no argument. */
        size_t al = strlen(args);
        while (al > 0 && args[al - 1] == ' ')
            args[--al] = 0;
        if (al == 0)
            args = NULL;
    }
    if (is_verb(line, vlen, "EHLO"))
        cmd_helo(s, args, true);
    else if (is_verb(line, vlen, "HELO"))
        cmd_helo(s, args, false);
    else if (is_verb(line, vlen, "MAIL"))
        cmd_mail(s, args);
    else if (is_verb(line, vlen, "RCPT"))
        cmd_rcpt(s, args);
    else if (is_verb(line, vlen, "DATA"))
        cmd_data(s, args);
    else if (is_verb(line, vlen, "RSET")) {
        if (args) {
            smtpd__reply_error(s, 501, "5.5.4 Syntax: RSET");
            return;
        }
        smtpd__trx_reset(s);
        smtpd__reply(s, 250, "2.0.0 Ok");
    } else if (is_verb(line, vlen, "NOOP"))
        smtpd__reply(s, 250, "2.0.0 Ok");
    else if (is_verb(line, vlen, "QUIT")) {
        if (s->srv->hooks.on_quit)
            s->srv->hooks.on_quit(s->srv->hooks.arg, s);
        smtpd__reply(s, 221, "2.0.0 Bye");
        smtpd__enter_state(s, S_CLOSING);
    } else if (is_verb(line, vlen, "STARTTLS"))
        cmd_starttls(s, args);
    else if (is_verb(line, vlen, "AUTH"))
        cmd_auth(s, args);
    else if (is_verb(line, vlen, "HELP"))
        smtpd__reply(s, 214, "2.0.0 See RFC 5321");
    else if (is_verb(line, vlen, "VRFY") || is_verb(line, vlen, "EXPN"))
        smtpd__reply(s, 502, "5.5.1 Command disabled");
    else if (is_verb(line, vlen, "BDAT"))
        smtpd__reply_error(s, 502, "5.5.1 CHUNKING not supported");
    else
        smtpd__reply_error(s, 500, "5.5.2 Error: command not recognized");
    (void)len;
}

/* One command line from s->in; returns true if it consumed input. */
static bool line_consume(smtpd_session *s)
{
    char *b = s->in.data;
    size_t n = s->in.len;
    if (s->skip_line) {
        for (size_t i = 0; i + 1 < n; i++)
            if (b[i] == '\r' && b[i + 1] == '\n') {
                sl_buf_consume(&s->in, i + 2);
                s->skip_line = false;
                deadline_stop(s);
                return true;
            }
        size_t keep = (n > 0 && b[n - 1] == '\r') ? 1 : 0;
        sl_buf_consume(&s->in, n - keep);
        return false;
    }
    size_t p = 0;
    while (p < n && b[p] != '\r' && b[p] != '\n')
        p++;
    if (p > SMTPD_LINE_MAX - 2) {
        smtpd__reply_error(s, 500, "5.5.2 Error: line too long");
        sl_buf_consume(&s->in, p);
        s->skip_line = true;
        return true;
    }
    if (p == n)
        return false;
    if (b[p] == '\r' && p + 1 == n)
        return false; /* the LF may be in the next read */
    if (b[p] == '\n' || b[p + 1] != '\n') {
        smtpd__reply(s, 500, "5.5.2 Bare LF/CR not allowed");
        sl_buf_reset(&s->in);
        smtpd__enter_state(s, S_CLOSING);
        return true;
    }
    char *line = xstrndup(b, p);
    sl_buf_consume(&s->in, p + 2);
    deadline_stop(s);
    if (memchr(line, 0, p)) {
        smtpd__reply_error(s, 500, "5.5.2 Error: NUL in command");
    } else {
        handle_line(s, line, p);
    }
    free(line);
    return true;
}

static void data_store(smtpd_session *s, const char *p, size_t n)
{
    s->data_bytes += n;
    if (s->data_bytes > s->srv->cfg.max_message_size)
        s->too_big = true;
    if (!s->too_big && !s->bad_newline && !s->bad_nul && !s->long_line)
        sl_buf_append(&s->msg, p, n);
}

static void data_done(smtpd_session *s)
{
    if (s->too_big) {
        smtpd__reply(s, 552, "5.3.4 Message size exceeds fixed maximum message size");
    } else if (s->bad_newline) {
        smtpd__reply(s, 550, "5.6.0 Bare CR or LF in message not allowed");
    } else if (s->bad_nul) {
        smtpd__reply(s, 550, "5.6.0 NUL in message not allowed");
    } else if (s->long_line) {
        smtpd__reply(s, 550, "5.6.0 Message line longer than 1000 octets");
    } else {
        smtpd__ask(s, Q_DATA, NULL);
        return;
    }
    s->srv->stats.rejected++;
    smtpd__trx_reset(s);
}

/*
 * Consume message bytes. Lines split only at CRLF, so only CRLF.CRLF ends
 * the message: a bare LF or CR is content (which rejects the message),
 * never a line end. Works through everything buffered before consuming it
 * once, so a large message costs no quadratic copying. Returns true if it
 * consumed input.
 */
static bool data_consume(smtpd_session *s)
{
    const char *b = s->in.data;
    size_t n = s->in.len, off = 0;
    bool ended = false;
    while (off < n) {
        if (s->line_len == 0 && b[off] == '.') {
            /* At a line start a dot needs the next bytes to tell the end
             * (".\r\n") from a stuffed dot. */
            size_t rem = n - off;
            if (rem < 3 && (rem < 2 || b[off + 1] == '\r'))
                break;
            if (b[off + 1] == '\r' && b[off + 2] == '\n') {
                off += 3;
                ended = true;
                break;
            }
            off++;
            s->line_len = 1; /* the stuffing dot counts towards the line length */
            continue;
        }
        size_t p = off;
        bool found = false, trailing_cr = false;
        const char *cr;
        while ((cr = memchr(b + p, '\r', n - p)) != NULL) {
            size_t i = (size_t)(cr - b);
            if (i + 1 == n) {
                trailing_cr = true; /* its LF may come with the next read */
                p = i;
                break;
            }
            if (b[i + 1] == '\n') {
                found = true;
                p = i;
                break;
            }
            s->bad_newline = true; /* bare CR */
            p = i + 1;
        }
        if (!found && !trailing_cr)
            p = n;
        size_t clen = p - off;
        if (memchr(b + off, '\n', clen))
            s->bad_newline = true; /* any LF before the first CRLF is bare */
        if (memchr(b + off, 0, clen))
            s->bad_nul = true;
        s->line_len += clen;
        if (found) {
            if (s->line_len + 2 > SMTPD_TEXT_MAX)
                s->long_line = true;
            data_store(s, b + off, clen + 2);
            off = p + 2;
            s->line_len = 0;
        } else {
            if (s->line_len + 2 > SMTPD_TEXT_MAX)
                s->long_line = true;
            data_store(s, b + off, clen);
            off = p;
            break;
        }
    }
    sl_buf_consume(&s->in, off);
    if (ended) {
        deadline_stop(s);
        smtpd__enter_state(s, S_HELO);
        data_done(s);
    }
    return off > 0;
}

/*
 * The deadline of the command under way: a command line must be complete
 * within command_timeout_ms of the read that brought its first octet (or
 * the first octet of a TLS record or handshake, which may hold no line
 * yet), and the message within data_timeout_ms of the 354. The idle timer
 * alone restarts on every read, so a client trickling one octet at a time
 * would hold the session for ever. The command deadline stops when a line
 * is complete; one arrives without further input only with a new read.
 */
static void deadline_stop(smtpd_session *s)
{
    if (!s->deadline_armed)
        return;
    s->deadline_armed = false;
    if (!s->detached && s->state != S_CLOSED)
        uv_timer_stop(&s->deadline);
}

static void deadline_cb(uv_timer_t *t)
{
    smtpd_session *s = t->data;
    s->deadline_armed = false;
    if (s->state == S_CLOSING) {
        smtpd__session_close(s); /* the client does not even take the final reply */
        return;
    }
    if (s->q != Q_NONE || s->state == S_CLOSED)
        return;
    char *text = xasprintf("4.4.2 %s Error: %s timeout exceeded", s->srv->hostname,
                           s->state == S_DATA ? "data" : "command");
    sl_info("smtpd %s: %s timeout in state %s", s->peer, s->state == S_DATA ? "data" : "command",
            smtpd__state_names[s->state]);
    smtpd__reply(s, 421, text);
    free(text);
    smtpd__enter_state(s, S_CLOSING);
    sl_buf_reset(&s->in);
    smtpd__session_flush(s);
}

static void deadline_arm(smtpd_session *s, uint64_t ms)
{
    if (s->deadline_armed || s->detached)
        return;
    s->deadline_armed = true;
    uv_timer_start(&s->deadline, deadline_cb, ms, 0);
}

/* Octets arrived: in a command state with nothing asked of the program,
 * they start a command line. */
void smtpd__deadline_read(smtpd_session *s)
{
    if (s->q == Q_NONE && s->state != S_INIT && s->state != S_DATA && s->state != S_CLOSING &&
        s->state != S_CLOSED)
        deadline_arm(s, s->srv->cfg.command_timeout_ms);
}

/* Output queued for the client: replies being written and those not yet
 * flushed. Detached sessions "send" into a buffer and never block. */
static bool out_high(const smtpd_session *s)
{
    return !s->detached && s->write_bytes + s->out.len > SMTPD_OUT_HIGH;
}

void smtpd__session_process(smtpd_session *s)
{
    if (s->processing)
        return;
    s->processing = true;
    while (s->q == Q_NONE && s->state != S_INIT && s->state != S_CLOSING && s->state != S_CLOSED &&
           s->in.len > 0) {
        if (out_high(s)) {
            smtpd__session_flush(s);
            if (s->state == S_CLOSED || out_high(s)) {
                s->out_blocked = true;
                break;
            }
        }
        bool progress = s->state == S_DATA ? data_consume(s) : line_consume(s);
        if (!progress)
            break;
    }
    s->processing = false;
    if (s->state == S_CLOSING)
        sl_buf_reset(&s->in);
    smtpd__session_flush(s);
    if (s->detached || s->state == S_CLOSED)
        return;
    if (s->state == S_DATA)
        deadline_arm(s, s->srv->cfg.data_timeout_ms); /* once, when DATA starts */
    bool want = (s->q == Q_NONE || s->in.len < SMTPD_READ_HIGH) && !s->out_blocked;
    if (want && !s->reading) {
        smtpd__session_read_start(s);
    } else if (!want && s->reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = false;
    }
}

