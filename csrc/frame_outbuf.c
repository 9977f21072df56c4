#include "frame_outbuf.h"

#include <stdlib.h>
#include <string.h>

void
tf_outbuf_init(tf_outbuf *b, size_t cap)
{
    b->data = NULL;
    b->cap = cap;
    b->len = 0;
    b->frames = 0;
    b->cut = 0;
}

void
tf_outbuf_free(tf_outbuf *b)
{
    free(b->data);
    tf_outbuf_init(b, b->cap);
}

int
tf_outbuf_add(tf_outbuf *b, const void *payload, size_t n)
{
    if (!tf_outbuf_fits(b, n) || n > TF_MAX_SIZE) {
        return -1;
    }
    if (b->data == NULL) {
        b->data = malloc(b->cap);
        if (b->data == NULL) {
            return -1;
        }
    }
    tf_encode_header(n, b->data + b->len);
    if (n > 0) {
        memcpy(b->data + b->len + TF_HEADER_SIZE, payload, n);
    }
    b->len += TF_HEADER_SIZE + n;
    b->frames++;
    return 0;
}

/* Walk the frame boundaries among the waiting bytes: how many frames end
 * within data[0 .. n), 0 < n < len.  *rest is what is left, after byte n,
 * of the frame byte n belongs to, or 0 when n is on a boundary.  Only our
 * own headers are here, so each one decodes. */
static size_t
walk(const tf_outbuf *b, size_t n, size_t *rest)
{
    size_t frames = 0, end = b->cut;
    *rest = 0;
    if (end > 0) {          /* the rest of a frame cut by an earlier send */
        if (end > n) {
            *rest = end - n;
            return 0;
        }
        frames++;
    }
    while (end < n) {
        size_t size = 0;
        tf_decode_header(b->data + end, &size);
        end += TF_HEADER_SIZE + size;
        if (end > n) {
            *rest = end - n;
            return frames;
        }
        frames++;
    }
    return frames;
}

size_t
tf_outbuf_frames_within(const tf_outbuf *b, size_t n)
{
    if (n >= b->len) {
        return b->frames;
    }
    size_t rest;
    return n == 0 ? 0 : walk(b, n, &rest);
}

void
tf_outbuf_consume(tf_outbuf *b, size_t n)
{
    if (n >= b->len) {
        b->len = b->frames = b->cut = 0;
        return;
    }
    if (n == 0) {
        return;
    }
    size_t rest;
    b->frames -= walk(b, n, &rest);
    b->cut = rest;
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}
