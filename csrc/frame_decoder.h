/* A sans-IO frame decoder: feed it bytes, take whole frames out.  Plain C,
 * no Python, no sockets: the same code serves tcpframe.Connection (which
 * recv()s straight into the decoder's buffer, so one system call can carry
 * many frames) and event loops (tcpframe.Decoder), and it can be tested by
 * chunking a stream every possible way.
 *
 * One buffer and an offset, as Twisted's and h11's are: unread bytes are
 * data[start .. end).  The length limit is checked the moment a header is
 * whole, before any of its payload is waited for. */
#ifndef TCPFRAME_FRAME_DECODER_H
#define TCPFRAME_FRAME_DECODER_H

#include <stddef.h>

typedef struct {
    unsigned char *data;
    size_t cap;
    size_t start;
    size_t end;
    size_t max_size;
} tf_decoder;

typedef enum {
    TF_DEC_FRAME,       /* a whole frame at *payload, *len bytes, valid until the
                           decoder is next reserved into or fed */
    TF_DEC_NEED_MORE,   /* *need more bytes are missing; *len is the
                           announced length once the header is whole, else 0 */
    TF_DEC_BAD_HEADER,  /* the next 8 bytes are not ASCII digits; nothing is
                           consumed, so every later call says the same */
    TF_DEC_TOO_LARGE,   /* *len, announced, exceeds max_size; not consumed */
} tf_dec_result;

void tf_decoder_init(tf_decoder *d, size_t max_size);
void tf_decoder_free(tf_decoder *d);

static inline size_t tf_decoder_buffered(const tf_decoder *d) { return d->end - d->start; }
static inline const unsigned char *tf_decoder_head(const tf_decoder *d) { return d->data + d->start; }

/* Room for at least `want` more bytes after the buffered ones (moving the
 * buffered ones to the front, or growing).  Returns where to write and sets
 * *avail to the room there, or NULL if memory ran out.  Write, then commit. */
unsigned char *tf_decoder_reserve(tf_decoder *d, size_t want, size_t *avail);
void tf_decoder_commit(tf_decoder *d, size_t n);

/* Copy n bytes in.  Returns 0, or -1 if memory ran out (nothing added). */
int tf_decoder_feed(tf_decoder *d, const void *bytes, size_t n);

/* Drop n buffered bytes (n <= buffered), e.g. after moving them elsewhere. */
void tf_decoder_consume(tf_decoder *d, size_t n);

/* How many more bytes the next frame needs at least: 0 when it is whole,
 * or its header is bad or too large.  A peek: nothing is consumed. */
size_t tf_decoder_needed(const tf_decoder *d);

tf_dec_result tf_decoder_next(tf_decoder *d, const unsigned char **payload, size_t *len,
                              size_t *need);

#endif
