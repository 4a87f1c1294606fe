/*
 * config_yaml - the first step of loading (config_int.h): libyaml's event
 * parser builds a small tree of cfg_node (scalar, sequence, mapping) that
 * remembers the line of every node, so that every later complaint can say
 * "FILE:LINE". Aliases are expanded by copying, within a budget.
 */
#include "config_int.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* A YAML alias is expanded by copying the anchored node; the node budget
 * keeps a "billion laughs" document from eating the machine. An alias is
 * looked up among the anchors defined so far, so their counts are bounded
 * too: without that, tens of thousands of each cost minutes of CPU before
 * the first error. A real configuration uses a handful of each. */
#define CFG_MAX_NODES 200000
#define CFG_MAX_DEPTH 64
#define CFG_MAX_ANCHORS 1000
#define CFG_MAX_ALIASES 10000

int cfg__fail(cfg_ctx *c, int line, const char *fmt, ...)
{
    if (c->err)
        return -1;
    sl_buf b = SL_BUF_INIT;
    if (line > 0)
        sl_buf_printf(&b, "%s:%d: ", c->file, line);
    else
        sl_buf_printf(&b, "%s: ", c->file);
    va_list ap;
    va_start(ap, fmt);
    sl_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    c->err = sl_buf_steal(&b, NULL);
    return -1;
}

void cfg__node_free(cfg_node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n; i++)
        cfg__node_free(n->kids[i]);
    free(n->kids);
    free(n->s);
    free(n);
}

/* A node of the given line; an error is reported at err_line (where the
 * alias being expanded is, for a copy). */
static cfg_node *cfg_node_new_at(cfg_ctx *c, cfg_node_type type, int line, int err_line)
{
    if (++c->n_nodes > CFG_MAX_NODES) {
        cfg__fail(c, err_line, "document too large (aliases expand to more than %d nodes)",
                  CFG_MAX_NODES);
        return NULL;
    }
    cfg_node *n = xcalloc(1, sizeof(*n));
    n->type = type;
    n->line = line;
    return n;
}

static cfg_node *cfg_node_new(cfg_ctx *c, cfg_node_type type, int line)
{
    return cfg_node_new_at(c, type, line, line);
}

static void cfg_node_add(cfg_node *parent, cfg_node *kid)
{
    if (parent->n == parent->cap) {
        parent->cap = parent->cap ? parent->cap * 2 : 8;
        parent->kids = xrealloc(parent->kids, parent->cap * sizeof(*parent->kids));
    }
    parent->kids[parent->n++] = kid;
}

static cfg_node *cfg_node_clone(cfg_ctx *c, const cfg_node *src, int alias_line)
{
    cfg_node *n = cfg_node_new_at(c, src->type, src->line, alias_line);
    if (!n)
        return NULL;
    n->plain = src->plain;
    n->s = src->s ? xstrdup(src->s) : NULL;
    for (size_t i = 0; i < src->n; i++) {
        cfg_node *k = cfg_node_clone(c, src->kids[i], alias_line);
        if (!k) {
            cfg__node_free(n);
            return NULL;
        }
        cfg_node_add(n, k);
    }
    return n;
}

static int yaml_next(cfg_ctx *c, yaml_parser_t *p, yaml_event_t *ev)
{
    if (yaml_parser_parse(p, ev))
        return 0;
    int line = (int)p->problem_mark.line + 1;
    int ctx_line = (int)p->context_mark.line + 1;
    /* An unclosed quote or bracket is found at the end of the file; the line
     * where it was opened is what the operator needs. */
    if (p->context && ctx_line != line)
        return cfg__fail(c, line, "YAML syntax error: %s %s (started at line %d)",
                         p->problem ? p->problem : "invalid document", p->context, ctx_line);
    if (p->context)
        return cfg__fail(c, line, "YAML syntax error: %s %s",
                         p->problem ? p->problem : "invalid document", p->context);
    return cfg__fail(c, line, "YAML syntax error: %s",
                     p->problem ? p->problem : "invalid document");
}

static int cfg_anchor_add(cfg_ctx *c, const yaml_char_t *name, cfg_node *n)
{
    if (!name)
        return 0;
    if (c->n_anchors >= CFG_MAX_ANCHORS)
        return cfg__fail(c, n->line, "more than %d anchors (&name)", CFG_MAX_ANCHORS);
    c->anchors = xrealloc(c->anchors, (c->n_anchors + 1) * sizeof(*c->anchors));
    c->anchors[c->n_anchors].name = xstrdup((const char *)name);
    c->anchors[c->n_anchors].node = n;
    c->n_anchors++;
    return 0;
}

/* Builds the node that starts with *ev (which it deletes). NULL on error. */
static cfg_node *yaml_build(cfg_ctx *c, yaml_parser_t *p, yaml_event_t *ev, int depth)
{
    int line = (int)ev->start_mark.line + 1;
    cfg_node *n = NULL;

    if (depth > CFG_MAX_DEPTH) {
        yaml_event_delete(ev);
        cfg__fail(c, line, "nesting deeper than %d levels", CFG_MAX_DEPTH);
        return NULL;
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        n = cfg_node_new(c, CN_SCALAR, line);
        if (n) {
            n->s = xstrndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
            n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
            if (cfg_anchor_add(c, ev->data.scalar.anchor, n) < 0) {
                cfg__node_free(n);
                n = NULL;
            }
        }
        yaml_event_delete(ev);
        return n;
    case YAML_ALIAS_EVENT: {
        const char *name = (const char *)ev->data.alias.anchor;
        if (++c->n_aliases > CFG_MAX_ALIASES) {
            cfg__fail(c, line, "more than %d aliases (*name)", CFG_MAX_ALIASES);
            yaml_event_delete(ev);
            return NULL;
        }
        for (size_t i = c->n_anchors; i-- > 0;) {
            if (!strcmp(c->anchors[i].name, name)) {
                n = cfg_node_clone(c, c->anchors[i].node, line);
                yaml_event_delete(ev);
                return n;
            }
        }
        cfg__fail(c, line, "unknown alias '*%s'", name);
        yaml_event_delete(ev);
        return NULL;
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool is_map = ev->type == YAML_MAPPING_START_EVENT;
        yaml_event_type_t end = is_map ? YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT;
        n = cfg_node_new(c, is_map ? CN_MAP : CN_SEQ, line);
        const yaml_char_t *anchor =
            is_map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
        /* The anchor refers to a node still under construction; an alias to it
         * inside itself would copy a partial node, which is harmless. */
        if (n && cfg_anchor_add(c, anchor, n) < 0) {
            cfg__node_free(n);
            n = NULL;
        }
        yaml_event_delete(ev);
        if (!n)
            return NULL;
        for (;;) {
            yaml_event_t kev;
            if (yaml_next(c, p, &kev) < 0) {
                cfg__node_free(n);
                return NULL;
            }
            if (kev.type == end) {
                yaml_event_delete(&kev);
                return n;
            }
            cfg_node *kid = yaml_build(c, p, &kev, depth + 1);
            if (!kid) {
                cfg__node_free(n);
                return NULL;
            }
            cfg_node_add(n, kid);
        }
    }
    default:
        cfg__fail(c, line, "YAML syntax error: unexpected event");
        yaml_event_delete(ev);
        return NULL;
    }
}

/* Parses a whole document; *root is NULL for an empty one. */
int cfg__yaml_load(cfg_ctx *c, const char *text, size_t len, cfg_node **root)
{
    yaml_parser_t p;
    yaml_event_t ev;
    int rc = -1;

    *root = NULL;
    if (!yaml_parser_initialize(&p))
        return cfg__fail(c, 0, "cannot initialise the YAML parser");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    for (;;) {
        if (yaml_next(c, &p, &ev) < 0)
            goto out;
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_STREAM_START_EVENT || t == YAML_DOCUMENT_END_EVENT) {
            yaml_event_delete(&ev);
            continue;
        }
        if (t == YAML_DOCUMENT_START_EVENT) {
            int line = (int)ev.start_mark.line + 1;
            yaml_event_delete(&ev);
            if (*root) {
                cfg__fail(c, line, "more than one YAML document; sluice reads one");
                goto out;
            }
            continue;
        }
        cfg_node *n = yaml_build(c, &p, &ev, 0);
        if (!n)
            goto out;
        if (*root) { /* cannot happen: one node per document */
            cfg__node_free(n);
            continue;
        }
        *root = n;
    }
    rc = 0;
out:
    yaml_parser_delete(&p);
    if (rc < 0) {
        cfg__node_free(*root);
        *root = NULL;
    }
    return rc;
}
