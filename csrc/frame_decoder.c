#include "frame_decoder.h"

#include <stdlib.h>
#include <string.h>

#include "frame_header.h"

void
tf_decoder_init(tf_decoder *d, size_t max_size)
{
    d->data = NULL;
    d->cap = d->start = d->end = 0;
    d->max_size = max_size;
}

void
tf_decoder_free(tf_decoder *d)
{
    free(d->data);
    tf_decoder_init(d, d->max_size);
}

unsigned char *
tf_decoder_reserve(tf_decoder *d, size_t want, size_t *avail)
{
    if (want > ((size_t)-1) - d->end) {
        return NULL;   /* no buffer that large can exist */
    }
    if (want == 0) {
        want = 1;      /* a real pointer even for an empty decoder */
    }
    if (d->cap - d->end < want && d->start > 0) {
        /* Slide the unread bytes to the front before growing. */
        size_t buffered = d->end - d->start;
        memmove(d->data, d->data + d->start, buffered);
        d->start = 0;
        d->end = buffered;
    }
    if (d->cap - d->end < want) {
        size_t need = d->end + want;
        size_t cap = d->cap ? d->cap : 4096;
        while (cap < need) {
            cap = cap > ((size_t)-1) / 2 ? need : cap * 2;
        }
        unsigned char *grown = realloc(d->data, cap);
        if (grown == NULL) {
            return NULL;
        }
        d->data = grown;
        d->cap = cap;
    }
    *avail = d->cap - d->end;
    return d->data + d->end;
}

void
tf_decoder_commit(tf_decoder *d, size_t n)
{
    d->end += n;
}

int
tf_decoder_feed(tf_decoder *d, const void *bytes, size_t n)
{
    if (n == 0) {
        return 0;   /* nothing to add: an empty decoder has no buffer yet */
    }
    size_t avail;
    unsigned char *at = tf_decoder_reserve(d, n, &avail);
    if (at == NULL) {
        return -1;
    }
    memcpy(at, bytes, n);
    d->end += n;
    return 0;
}

void
tf_decoder_consume(tf_decoder *d, size_t n)
{
    d->start += n;
    if (d->start == d->end) {
        d->start = d->end = 0;    /* empty: the next bytes go to the front */
    }
}

size_t
tf_decoder_needed(const tf_decoder *d)
{
    size_t buffered = d->end - d->start;
    size_t n;
    if (buffered < TF_HEADER_SIZE) {
        return TF_HEADER_SIZE - buffered;
    }
    if (tf_decode_header(d->data + d->start, &n) < 0 || n > d->max_size) {
        return 0;
    }
    return buffered - TF_HEADER_SIZE >= n ? 0 : TF_HEADER_SIZE + n - buffered;
}

tf_dec_result
tf_decoder_next(tf_decoder *d, const unsigned char **payload, size_t *len, size_t *need)
{
    size_t buffered = d->end - d->start;
    *len = 0;
    if (buffered < TF_HEADER_SIZE) {
        *need = TF_HEADER_SIZE - buffered;
        return TF_DEC_NEED_MORE;
    }
    size_t n;
    if (tf_decode_header(d->data + d->start, &n) < 0) {
        return TF_DEC_BAD_HEADER;
    }
    *len = n;
    if (n > d->max_size) {
        return TF_DEC_TOO_LARGE;
    }
    if (buffered - TF_HEADER_SIZE < n) {
        *need = TF_HEADER_SIZE + n - buffered;
        return TF_DEC_NEED_MORE;
    }
    *payload = d->data + d->start + TF_HEADER_SIZE;
    /* The payload stays where it is until the next reserve or feed. */
    d->start += TF_HEADER_SIZE + n;
    if (d->start == d->end) {
        d->start = d->end = 0;
    }
    return TF_DEC_FRAME;
}
