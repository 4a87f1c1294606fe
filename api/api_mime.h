/*
 * api_mime - builds the RFC 5322/MIME message of an inline
 * POST /v1/messages as a template body for common/template.
 *
 * api_mime_build() writes a message with From (the sender, with an
 * optional display name), To ("{{sluice.to}}", which sluice-api fills with
 * each recipient), Subject, MIME-Version, the caller's extra headers and
 * the body:
 *   - text only or HTML only: one text/plain or text/html part;
 *   - both: multipart/alternative (text first, as RFC 2046 wants the
 *     plainest first);
 *   - with attachments: multipart/mixed of that body and one part per
 *     attachment (base64 in lines of 76, Content-Disposition attachment
 *     with the file name, RFC 2231 encoded when not ASCII).
 * Bodies are UTF-8, 7bit when ASCII and 8bit otherwise (the template
 * renderer re-encodes a part as quoted-printable if a line exceeds 998
 * octets). Header values that are not ASCII become RFC 2047 encoded-words,
 * unless they hold a {{placeholder}}: those are written as UTF-8 (RFC
 * 6532) so the placeholder stays visible to the renderer, which encodes
 * substituted values itself. {{name}} placeholders anywhere else are left
 * for the renderer (per-recipient substitutions).
 *
 * Extra headers may not be one the builder writes or a structural one
 * (From, To, Cc, Bcc, Subject, MIME-Version, Content-*, Message-ID, Date,
 * Received, Return-Path, DKIM-Signature); names are RFC 5322 ftext.
 * Attachment content must be valid base64 (white space allowed).
 *
 * Returns 0 and appends to out, or -1 with a reason naming the field
 * ("attachments[1].content: not base64") in why. Pure, thread safe; the
 * boundaries come from getrandom() and never occur in the bodies.
 */
#ifndef SLUICE_API_MIME_H
#define SLUICE_API_MIME_H

#include <stddef.h>

#include "util.h"

typedef struct api_attachment {
    const char *filename;
    const char *content_type; /* NULL: application/octet-stream */
    const char *content_b64;
} api_attachment;

typedef struct api_header {
    const char *name;
    const char *value;
} api_header;

typedef struct api_mime {
    const char *from;      /* address */
    const char *from_name; /* NULL: none */
    const char *subject;
    const char *text; /* NULL: none; at least one of text and html */
    const char *html;
    const api_attachment *att;
    size_t n_att;
    const api_header *headers;
    size_t n_headers;
} api_mime;

#define API_MIME_TO_VAR "sluice.to"

int api_mime_build(const api_mime *m, sl_buf *out, char *why, size_t whylen);

#endif
