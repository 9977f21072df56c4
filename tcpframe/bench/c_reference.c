/* The C reference for the benchmark: the lesson's framing (8 ASCII digits,
 * then the payload) in plain C, one writev() per frame, header and payload
 * read with plain recv() loops -- what a careful C programmer writes without
 * a read-ahead buffer.  Built by tcpframe.bench; one process per side.
 *
 * Each frame is received into a freshly allocated buffer, as every Python
 * peer's result is a new object.  Measured here, that is also the faster
 * C: 1 MiB round trips took 523-594 us with a fresh buffer per frame and
 * 767-1018 us reusing one (a memory-system effect, not framing), and a
 * reference must not be slower than it can be.
 *
 *   c_reference server MODE                  prints its port, serves one client
 *   c_reference client MODE PORT SIZE COUNT  prints one JSON result line
 *
 * MODE rr: COUNT request/response round trips of SIZE bytes (echo).
 * MODE stream: COUNT frames one way, an empty frame to end, then an ack.
 * MODE rss: one frame of SIZE bytes; the server reports its RSS growth. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static void
die(const char *what)
{
    perror(what);
    exit(1);
}

/* Returns 0, or -1 if the peer closed before the first byte (a clean end). */
static int
read_exact(int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r == 0 && got == 0) {
            return -1;
        }
        if (r <= 0) {
            die("recv");
        }
        got += (size_t)r;
    }
    return 0;
}

static void
write_frame(int fd, const char *data, size_t n)
{
    char header[9];
    snprintf(header, sizeof header, "%08zu", n);
    struct iovec iov[2] = {{header, 8}, {(void *)data, n}};
    int cnt = 2;
    struct iovec *v = iov;
    while (cnt > 0) {
        ssize_t r = writev(fd, v, cnt);
        if (r < 0) {
            die("writev");
        }
        while (cnt > 0 && (size_t)r >= v->iov_len) {
            r -= (ssize_t)v->iov_len;
            v++;
            cnt--;
        }
        if (cnt > 0) {
            v->iov_base = (char *)v->iov_base + r;
            v->iov_len -= (size_t)r;
        }
    }
}

/* Read one frame into a new buffer (*buf, to be freed); returns its length,
 * or -1 when the peer closed cleanly between frames. */
static long
read_frame(int fd, char **buf)
{
    char header[8];
    if (read_exact(fd, header, 8) < 0) {
        return -1;
    }
    size_t n = 0;
    for (int i = 0; i < 8; i++) {
        if (header[i] < '0' || header[i] > '9') {
            fprintf(stderr, "bad header\n");
            exit(1);
        }
        n = n * 10 + (size_t)(header[i] - '0');
    }
    *buf = malloc(n ? n : 1);
    if (*buf == NULL) {
        die("malloc");
    }
    if (n > 0 && read_exact(fd, *buf, n) < 0) {
        die("recv: peer closed mid-frame");
    }
    return (long)n;
}

static long
max_rss_bytes(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss * 1024L;
}

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int
serve(const char *mode)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1) < 0) {
        die("bind/listen");
    }
    socklen_t len = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &len);
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
        die("accept");
    }
    char *buf = NULL;
    long n;
    if (strcmp(mode, "rr") == 0) {
        while ((n = read_frame(fd, &buf)) >= 0) {
            write_frame(fd, buf, (size_t)n);
            free(buf);
        }
        buf = NULL;
    }
    else if (strcmp(mode, "stream") == 0) {
        long frames = 0;
        while ((n = read_frame(fd, &buf)) > 0) {
            frames++;
            free(buf);
        }
        char ack[32];
        int k = snprintf(ack, sizeof ack, "%ld", frames);
        write_frame(fd, ack, (size_t)k);
    }
    else {
        long before = max_rss_bytes();
        read_frame(fd, &buf);
        char reply[64];
        int k = snprintf(reply, sizeof reply, "{\"rss_growth\": %ld}", max_rss_bytes() - before);
        write_frame(fd, reply, (size_t)k);
    }
    free(buf);
    close(fd);
    close(lfd);
    return 0;
}

static int
client(const char *mode, int port, size_t size, long count)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        die("connect");
    }
    char *payload = calloc(1, size ? size : 1);
    char *buf = NULL;
    if (strcmp(mode, "rr") == 0) {
        int64_t *samples = malloc(sizeof(int64_t) * (size_t)count);
        for (long i = 0; i < count; i++) {
            int64_t t0 = now_ns();
            write_frame(fd, payload, size);
            read_frame(fd, &buf);
            samples[i] = now_ns() - t0;
            free(buf);
            buf = NULL;
        }
        qsort(samples, (size_t)count, sizeof(int64_t), cmp_i64);
        printf("{\"median_us\": %.3f}\n", samples[count / 2] / 1000.0);
        free(samples);
    }
    else if (strcmp(mode, "stream") == 0) {
        int64_t t0 = now_ns();
        for (long i = 0; i < count; i++) {
            write_frame(fd, payload, size);
        }
        write_frame(fd, payload, 0);
        read_frame(fd, &buf);
        double seconds = (now_ns() - t0) / 1e9;
        printf("{\"seconds\": %.6f}\n", seconds);
    }
    else {
        write_frame(fd, payload, size);
        long n = read_frame(fd, &buf);
        printf("%.*s\n", (int)n, buf);
    }
    free(payload);
    free(buf);
    close(fd);
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "server") == 0) {
        return serve(argv[2]);
    }
    if (argc == 6 && strcmp(argv[1], "client") == 0) {
        return client(argv[2], atoi(argv[3]), (size_t)atol(argv[4]), atol(argv[5]));
    }
    fprintf(stderr, "usage: c_reference server MODE | client MODE PORT SIZE COUNT\n");
    return 2;
}
