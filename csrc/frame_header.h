/* The lesson's self-sizing frame header: 8 ASCII decimal digits, zero-padded,
 * giving the payload length in bytes.  Plain C, no Python: the codec is what a
 * hostile peer talks to, so it is kept small enough to test exhaustively. */
#ifndef TCPFRAME_FRAME_HEADER_H
#define TCPFRAME_FRAME_HEADER_H

#include <stddef.h>

#define TF_HEADER_SIZE 8
/* The largest length eight decimal digits can say. */
#define TF_MAX_SIZE ((size_t)99999999)

/* Write the header for a payload of n bytes (n <= TF_MAX_SIZE) into out.
 * Returns 0, or -1 (out untouched) when n does not fit in eight digits. */
int tf_encode_header(size_t n, unsigned char out[TF_HEADER_SIZE]);

/* Parse a header strictly: exactly eight bytes '0'..'9'.  No sign, no
 * underscore, no space, no non-ASCII digit -- the things int() accepts.
 * Returns 0 and sets *n, or -1 when any byte is not an ASCII digit. */
int tf_decode_header(const unsigned char header[TF_HEADER_SIZE], size_t *n);

#endif
