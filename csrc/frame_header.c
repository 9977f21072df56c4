#include "frame_header.h"

int
tf_encode_header(size_t n, unsigned char out[TF_HEADER_SIZE])
{
    if (n > TF_MAX_SIZE) {
        return -1;
    }
    for (int i = TF_HEADER_SIZE - 1; i >= 0; i--) {
        out[i] = (unsigned char)('0' + n % 10);
        n /= 10;
    }
    return 0;
}

int
tf_decode_header(const unsigned char header[TF_HEADER_SIZE], size_t *n)
{
    size_t value = 0;
    for (int i = 0; i < TF_HEADER_SIZE; i++) {
        unsigned char c = header[i];
        if (c < '0' || c > '9') {
            return -1;
        }
        value = value * 10 + (size_t)(c - '0');
    }
    *n = value;
    return 0;
}
