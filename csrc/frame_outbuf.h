/* Whole frames waiting to be sent: the write side of frame_decoder.h.  Plain
 * C, no Python, no sockets.  tcpframe.Connection(write_buffer=N) appends each
 * frame here and sends the lot in one system call, so a loop sending small
 * frames one by one costs one system call per N bytes, not one per frame.
 *
 * The capacity is fixed and the memory allocated once, at the first frame,
 * and never moved: a vectored send may point into it while the caller's
 * lock keeps everyone else from changing it.  What a send moved is dropped
 * from the front (tf_outbuf_consume); what it did not stays, in order, so a
 * send cut short by a timeout can be finished later -- even in the middle of
 * a frame -- and no byte is ever sent twice. */
#ifndef TCPFRAME_FRAME_OUTBUF_H
#define TCPFRAME_FRAME_OUTBUF_H

#include <stddef.h>

#include "frame_header.h"

typedef struct {
    unsigned char *data;   /* cap bytes, once the first frame was added */
    size_t cap;
    size_t len;            /* the waiting bytes: data[0 .. len) */
    size_t frames;         /* frames whose last byte is waiting */
    size_t cut;            /* the first `cut` waiting bytes end a frame whose
                              start a partial send moved (0: on a boundary) */
} tf_outbuf;

void tf_outbuf_init(tf_outbuf *b, size_t cap);
/* Frees the memory; what was waiting is gone.  The buffer can be used again. */
void tf_outbuf_free(tf_outbuf *b);

/* Whether a frame of n payload bytes (its header included) fits in the room
 * that is left.  Written so that no sum can wrap around. */
static inline int
tf_outbuf_fits(const tf_outbuf *b, size_t n)
{
    size_t room = b->cap - b->len;
    return room >= TF_HEADER_SIZE && n <= room - TF_HEADER_SIZE;
}

/* Add a frame: its header, then n payload bytes.  Returns 0, or -1 (nothing
 * added) when it does not fit, n > TF_MAX_SIZE, or memory ran out. */
int tf_outbuf_add(tf_outbuf *b, const void *payload, size_t n);

/* How many frames end within the first n waiting bytes (n <= len): the
 * whole frames a send that moved n bytes delivered. */
size_t tf_outbuf_frames_within(const tf_outbuf *b, size_t n);

/* Drop the first n waiting bytes (n <= len), which were sent; the rest move
 * to the front, in order. */
void tf_outbuf_consume(tf_outbuf *b, size_t n);

#endif
