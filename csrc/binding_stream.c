/* The binding's socket driving: a Stream per call, over a plain socket's
 * file descriptor (the C core) or a wrapped socket's own methods, and the
 * exceptions that carry how far a transfer got. */
#include "binding.h"

#include <errno.h>
#include <string.h>

/* The pending exception as one object: 3.12's API, emulated before it. */
PyObject *
take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_DECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

void
put_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* ---------------------------------------------------------------- errors */

/* Raise cls(*args) built from a format, so the instance carries its fields. */
void
raise_new(PyObject *cls, const char *format, ...)
{
    va_list va;
    va_start(va, format);
    PyObject *args = Py_VaBuildValue(format, va);
    va_end(va);
    if (args == NULL) {
        return;
    }
    PyObject *exc = PyObject_CallObject(cls, args);
    Py_DECREF(args);
    if (exc != NULL) {
        PyErr_SetObject(cls, exc);
        Py_DECREF(exc);
    }
}

void
raise_bad_header(module_state *st, const unsigned char *header)
{
    PyObject *raw = PyBytes_FromStringAndSize((const char *)header, TF_HEADER_SIZE);
    if (raw == NULL) {
        return;
    }
    PyObject *message = PyUnicode_FromFormat(
        "bad frame header %R: expected 8 ASCII digits '0'-'9' giving the payload "
        "length, zero-padded (e.g. b'00000005' for 5 bytes); the stream is out of "
        "sync, close the connection", raw);
    if (message != NULL) {
        raise_new(st->FrameError, "(NO)", message, raw);
    }
    Py_DECREF(raw);
}

void
raise_too_large_to_receive(module_state *st, const unsigned char *header, size_t n,
                           Py_ssize_t max_size)
{
    PyObject *raw = PyBytes_FromStringAndSize((const char *)header, TF_HEADER_SIZE);
    if (raw == NULL) {
        return;
    }
    PyObject *msg = PyUnicode_FromFormat(
        "the peer announced a frame of %zu bytes, over max_size=%zd; no payload "
        "byte was read, the stream is out of sync: close the connection (or "
        "raise max_size if such frames are expected)", n, max_size);
    if (msg != NULL) {
        raise_new(st->FrameTooLarge, "(NnnO)", msg, (Py_ssize_t)n, max_size, raw);
    }
    Py_DECREF(raw);
}

void
raise_too_large_to_send(module_state *st, Py_ssize_t size)
{
    raise_new(st->FrameTooLarge, "(snn)",
              "payload too large for a frame: the 8-digit header can announce at "
              "most 99,999,999 bytes; nothing was sent, split the data into "
              "several frames", size, (Py_ssize_t)TF_MAX_SIZE);
}

/* --------------------------------------------------------------- streams */

static void
gil_release(tf_hooks *hooks)
{
    ((Stream *)hooks)->tstate = PyEval_SaveThread();
}

static void
gil_acquire(tf_hooks *hooks)
{
    PyEval_RestoreThread(((Stream *)hooks)->tstate);
}

/* EINTR: run the Python signal handlers now.  One that raises (Ctrl-C) stops
 * the transfer; one that returns lets it go on with the time that is left. */
static int
run_signal_handlers(tf_hooks *hooks)
{
    (void)hooks;
    return PyErr_CheckSignals() < 0;
}

int
stream_open(Stream *s, module_state *st, PyObject *sock)
{
    s->hooks.release = gil_release;
    s->hooks.acquire = gil_acquire;
    s->hooks.interrupted = run_signal_handlers;
    s->tstate = NULL;
    s->st = st;
    s->sock = sock;
    s->wrapped = !Py_IS_TYPE(sock, (PyTypeObject *)st->socket_type);
    s->timeout = -1.0;
    s->timeout_changed = 0;
    s->io.fd = -1;
    s->io.hooks = &s->hooks;
    s->io.error = 0;
    s->io.deadline_ns = TF_NO_DEADLINE;

    PyObject *t = PyObject_CallMethod(sock, "gettimeout", NULL);
    if (t == NULL) {
        if (!s->wrapped || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();      /* a minimal wrapper: no timeout, it blocks */
    }
    else if (t != Py_None) {
        s->timeout = PyFloat_AsDouble(t);
        if (s->timeout == -1.0 && PyErr_Occurred()) {
            Py_DECREF(t);
            return -1;
        }
        /* Past ~30 years a deadline is no deadline (and would overflow). */
        if (s->timeout < 1e9) {
            s->io.deadline_ns = tf_monotonic_ns() + (int64_t)(s->timeout * 1e9);
        }
    }
    Py_XDECREF(t);

    if (!s->wrapped) {
        PyObject *fd = PyObject_CallMethod(sock, "fileno", NULL);
        if (fd == NULL) {
            return -1;
        }
        long v = PyLong_AsLong(fd);
        Py_DECREF(fd);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (v < 0) {
            errno = EBADF;
            PyErr_SetString(PyExc_OSError,
                            "the socket is closed (fileno() is -1); open a new connection");
            return -1;
        }
        s->io.fd = (int)v;
    }
    /* Ours for the whole call: another thread may close the socket (and
     * drop its last other reference) while this one waits in recv(). */
    Py_INCREF(sock);
    return 0;
}

/* Put back a wrapped socket's own timeout, keeping any pending exception. */
int
stream_close(Stream *s)
{
    int result = 0;
    if (s->timeout_changed) {
        PyObject *pending = take_exception();
        PyObject *r = PyObject_CallMethod(s->sock, "settimeout", "d", s->timeout);
        Py_XDECREF(r);
        if (pending != NULL) {
            if (r == NULL) {
                PyErr_Clear();  /* the first error is the one worth reporting */
            }
            put_exception(pending);
            result = -1;
        }
        else if (r == NULL) {
            result = -1;
        }
    }
    Py_DECREF(s->sock);
    return result;
}

/* Before each method call on a wrapped socket with a timeout, narrow its
 * timeout to what is left of our deadline: one deadline for the whole call. */
static tf_status
wrapped_arm_deadline(Stream *s)
{
    if (s->timeout <= 0.0) {
        return TF_OK;       /* None blocks; 0.0 is non-blocking already */
    }
    int64_t left = s->io.deadline_ns - tf_monotonic_ns();
    if (left <= 0) {
        return TF_TIMEOUT;
    }
    PyObject *r = PyObject_CallMethod(s->sock, "settimeout", "d", (double)left / 1e9);
    if (r == NULL) {
        return TF_ABORTED;
    }
    Py_DECREF(r);
    s->timeout_changed = 1;
    return TF_OK;
}

/* A Python exception from a wrapped socket: its timeout is ours to report
 * (with progress); anything else propagates as it is. */
static tf_status
wrapped_failed(Stream *s)
{
    if (PyErr_ExceptionMatches(s->st->socket_timeout)) {
        PyErr_Clear();
        return TF_TIMEOUT;
    }
    return TF_ABORTED;
}

/* Call sock.<method>(memoryview over buf[0:len]) and release the view at
 * once, so the callee cannot keep a pointer into memory we are about to move. */
static PyObject *
call_with_view(PyObject *sock, const char *method, char *buf, Py_ssize_t len, int flags)
{
    PyObject *view = PyMemoryView_FromMemory(buf, len, flags);
    if (view == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallMethod(sock, method, "O", view);
    PyObject *pending = r == NULL ? take_exception() : NULL;
    PyObject *released = PyObject_CallMethod(view, "release", NULL);
    Py_DECREF(view);
    if (pending != NULL) {
        Py_XDECREF(released);
        PyErr_Clear();      /* the method's own error is the one to report */
        put_exception(pending);
        return NULL;
    }
    if (released == NULL) {     /* the method kept an export of our memory */
        Py_XDECREF(r);
        return NULL;
    }
    Py_DECREF(released);
    return r;
}

tf_status
stream_recv_some(Stream *s, char *buf, size_t n, size_t *got)
{
    if (!s->wrapped) {
        return tf_recv_some(&s->io, buf, n, got);
    }
    tf_status armed = wrapped_arm_deadline(s);
    if (armed != TF_OK) {
        return armed;
    }
    Py_ssize_t want = n > (size_t)PY_SSIZE_T_MAX ? PY_SSIZE_T_MAX : (Py_ssize_t)n;
    PyObject *r = call_with_view(s->sock, "recv_into", buf, want, PyBUF_WRITE);
    if (r == NULL) {
        return wrapped_failed(s);
    }
    Py_ssize_t k = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    if (k == -1 && PyErr_Occurred()) {
        return TF_ABORTED;
    }
    if (k < 0 || k > want) {
        PyErr_Format(PyExc_ValueError,
                     "%.200s.recv_into() returned %zd for a buffer of %zd bytes",
                     Py_TYPE(s->sock)->tp_name, k, want);
        return TF_ABORTED;
    }
    *got = (size_t)k;
    return k == 0 ? TF_EOF : TF_OK;
}

tf_status
stream_recv_exact(Stream *s, char *buf, size_t n, size_t *done)
{
    if (!s->wrapped) {
        return tf_recv_exact(&s->io, buf, n, done);
    }
    while (*done < n) {
        size_t got;
        tf_status status = stream_recv_some(s, buf + *done, n - *done, &got);
        if (status != TF_OK) {
            return status;
        }
        *done += got;
    }
    return TF_OK;
}

static tf_status
wrapped_sendall(Stream *s, char *buf, size_t len, size_t *done)
{
    if (len == 0) {
        return TF_OK;
    }
    tf_status armed = wrapped_arm_deadline(s);
    if (armed != TF_OK) {
        return armed;
    }
    PyObject *r = call_with_view(s->sock, "sendall", buf, (Py_ssize_t)len, PyBUF_READ);
    if (r == NULL) {
        return wrapped_failed(s);
    }
    Py_DECREF(r);
    *done += len;
    return TF_OK;
}

/* Send iov[0..cnt).  For a wrapped socket *done can only count whole
 * sendall() calls: a wrapper does not say how much of a failed one left. */
tf_status
stream_send(Stream *s, struct iovec *iov, int cnt, size_t *done)
{
    if (!s->wrapped) {
        return tf_send_iov(&s->io, iov, cnt, done);
    }
    size_t total = 0;
    for (int i = 0; i < cnt; i++) {
        total += iov[i].iov_len;
    }
    if (cnt > 1 && total <= (size_t)JOIN_LIMIT) {
        char joined[JOIN_LIMIT];
        size_t at = 0;
        for (int i = 0; i < cnt; i++) {
            memcpy(joined + at, iov[i].iov_base, iov[i].iov_len);
            at += iov[i].iov_len;
        }
        return wrapped_sendall(s, joined, total, done);
    }
    for (int i = 0; i < cnt; i++) {
        tf_status st = wrapped_sendall(s, iov[i].iov_base, iov[i].iov_len, done);
        if (st != TF_OK) {
            return st;
        }
    }
    return TF_OK;
}

/* ---------------------------------------------------- status -> exception */

static PyObject *
progress_bytes(const Progress *p, const char *rest)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)p->done);
    if (b == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(b);
    memcpy(out, p->prefix, p->prefix_len);
    memcpy(out + p->prefix_len, rest, p->done - p->prefix_len);
    return b;
}

static const char *
sync_advice(const Progress *p)
{
    if (p->kept) {
        return "what arrived stays buffered in the Connection, and the next call continues from it";
    }
    return p->done == 0
        ? "nothing was consumed, the stream is where it was and the call may be retried"
        : "the stream is no longer on a frame boundary: close the connection";
}

/* A signal handler (or a wrapped socket's method) raised mid-transfer: its
 * exception goes out unchanged, with a note (3.11+) of how far the transfer
 * got, so that even a Ctrl-C says what was cut. */
static void
note_progress(const Progress *p, const char *verb)
{
    if (p->done == 0) {
        return;
    }
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *exc = take_exception();
    if (exc == NULL) {
        return;
    }
    PyObject *note = PyUnicode_FromFormat(
        "tcpframe: interrupted after %s %zu of %S bytes of the %s; the stream is "
        "no longer on a frame boundary", verb, p->done, p->expected, p->what);
    PyObject *r = note ? PyObject_CallMethod(exc, "add_note", "N", note) : NULL;
    if (r == NULL) {
        PyErr_Clear();      /* the original exception matters more */
    }
    Py_XDECREF(r);
    put_exception(exc);
#else
    (void)verb;     /* no add_note before 3.11 */
#endif
}

/* Turn a failed receive into its exception; `rest` holds the bytes received
 * after the prefix.  TF_ABORTED means a Python exception is already set. */
void
raise_recv_failure(Stream *s, tf_status status, const Progress *p, const char *rest)
{
    if (status == TF_ABORTED) {
        note_progress(p, "receiving");
        return;
    }
    if (status == TF_ERRNO) {
        errno = s->io.error;
        PyErr_SetFromErrno(PyExc_OSError);
        return;
    }
    PyObject *partial = progress_bytes(p, rest);
    if (partial == NULL) {
        return;
    }
    if (status == TF_EOF && p->done == 0 && p->expected == Py_None) {
        raise_new(s->st->ConnectionClosed, "(sOO)",
                  "the peer closed the connection between frames (no frame was in "
                  "progress): the conversation is over", partial, Py_None);
    }
    else if (status == TF_EOF) {
        PyObject *msg = PyUnicode_FromFormat(
            "the peer closed the connection after %zu of %S bytes of the %s; "
            "what came is in .partial", p->done, p->expected, p->what);
        if (msg != NULL) {
            raise_new(s->st->ConnectionClosed, "(NOO)", msg, partial, p->expected);
        }
    }
    else {
        const char *why = s->timeout == 0.0
            ? "the socket is non-blocking (timeout 0.0) and the data was not there"
            : "timed out";
        PyObject *msg = p->expected == Py_None
            ? PyUnicode_FromFormat("%s before any byte of the next frame arrived; %s",
                                   why, sync_advice(p))
            : PyUnicode_FromFormat("%s after %zu of %S bytes of the %s; %s", why, p->done,
                                   p->expected, p->what, sync_advice(p));
        if (msg != NULL) {
            raise_new(s->st->TransferTimeout, "(NOOO)", msg, partial, Py_None, p->expected);
        }
    }
    Py_DECREF(partial);
}

void
raise_send_failure(Stream *s, tf_status status, const Progress *p)
{
    if (status == TF_ABORTED) {
        note_progress(p, "sending");
        return;
    }
    if (status == TF_ERRNO) {
        errno = s->io.error;
        PyErr_SetFromErrno(PyExc_OSError);
        return;
    }
    /* TF_EOF cannot come from a send: only a timeout is left. */
    const char *why = s->timeout == 0.0
        ? "the socket is non-blocking (timeout 0.0) and its send buffer was full"
        : "timed out";
    PyObject *msg = PyUnicode_FromFormat(
        "%s after sending %zu of %S bytes of the %s; %s", why, p->done, p->expected,
        p->what, sync_advice(p));
    if (msg != NULL) {
        raise_new(s->st->TransferTimeout, "(NOnO)", msg, Py_None, (Py_ssize_t)p->done,
                  p->expected);
    }
}

/* ------------------------------------------------------------- receiving */

tf_status
recv_growing_into(Stream *s, Py_ssize_t n, PyObject **result, size_t *got)
{
    Py_ssize_t cap = PyBytes_GET_SIZE(*result);
    for (;;) {
        tf_status status = stream_recv_exact(s, PyBytes_AS_STRING(*result), (size_t)cap, got);
        if (status != TF_OK || cap == n) {
            if (status != TF_OK && _PyBytes_Resize(result, (Py_ssize_t)*got) < 0) {
                return TF_ABORTED;
            }
            return status;
        }
        cap = cap > n / 2 ? n : cap * 2;
        if (_PyBytes_Resize(result, cap) < 0) {
            return TF_ABORTED;
        }
    }
}

/* Receive exactly n bytes as a new bytes object that grows as they arrive.
 * On failure raise with the progress in *p. */
PyObject *
recv_exact_bytes(Stream *s, Py_ssize_t n, Progress *p)
{
    PyObject *result = PyBytes_FromStringAndSize(NULL, n < GROW_START ? n : GROW_START);
    if (result == NULL) {
        return NULL;
    }
    size_t got = 0;
    tf_status status = recv_growing_into(s, n, &result, &got);
    if (status == TF_OK) {
        return result;
    }
    p->done = p->prefix_len + got;
    if (result != NULL) {
        raise_recv_failure(s, status, p, PyBytes_AS_STRING(result));
        Py_DECREF(result);
    }
    return NULL;
}

/* The announced length of the next frame, or -1 with an exception set.
 * header receives the raw header bytes. */
static Py_ssize_t
recv_header(Stream *s, Py_ssize_t max_size, unsigned char header[TF_HEADER_SIZE])
{
    size_t got = 0;
    tf_status status = stream_recv_exact(s, (char *)header, TF_HEADER_SIZE, &got);
    if (status != TF_OK) {
        /* Expected is unknown until the header is whole: None when nothing
         * came (a clean close), else at least the header's 8 bytes. */
        PyObject *expected = got == 0 ? Py_NewRef(Py_None) : PyLong_FromLong(TF_HEADER_SIZE);
        if (expected != NULL) {
            Progress p = {"frame header", "", 0, got, expected};
            raise_recv_failure(s, status, &p, (const char *)header);
            Py_DECREF(expected);
        }
        return -1;
    }
    size_t n;
    if (tf_decode_header(header, &n) < 0) {
        raise_bad_header(s->st, header);
        return -1;
    }
    if ((Py_ssize_t)n > max_size) {
        raise_too_large_to_receive(s->st, header, n, max_size);
        return -1;
    }
    return (Py_ssize_t)n;
}

/* The payload of the next frame as bytes. */
PyObject *
read_frame(module_state *st, PyObject *sock, Py_ssize_t max_size, int explicit_max)
{
    if (is_connection(st, sock)) {
        return connection_read_frame(sock, max_size, !explicit_max);
    }
    Stream s;
    if (stream_open(&s, st, sock) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    unsigned char header[TF_HEADER_SIZE];
    Py_ssize_t n = recv_header(&s, max_size, header);
    if (n >= 0) {
        PyObject *expected = PyLong_FromSsize_t(TF_HEADER_SIZE + n);
        if (expected != NULL) {
            Progress p = {"frame", (const char *)header, TF_HEADER_SIZE, 0, expected};
            result = recv_exact_bytes(&s, n, &p);
            Py_DECREF(expected);
        }
    }
    if (stream_close(&s) < 0) {
        Py_CLEAR(result);
    }
    return result;
}

/* --------------------------------------------------------------- sending */

/* Send header + payload in one vectored call. */
PyObject *
send_frame(module_state *st, PyObject *sock, const char *data, Py_ssize_t len)
{
    if (is_connection(st, sock)) {
        sock = connection_socket(sock);
        if (sock == NULL) {
            return NULL;
        }
    }
    if ((size_t)len > TF_MAX_SIZE) {
        raise_too_large_to_send(st, len);
        return NULL;
    }
    unsigned char header[TF_HEADER_SIZE];
    tf_encode_header((size_t)len, header);
    struct iovec iov[2] = {{header, TF_HEADER_SIZE}, {(void *)data, (size_t)len}};
    Stream s;
    if (stream_open(&s, st, sock) < 0) {
        return NULL;
    }
    size_t done = 0;
    tf_status status = stream_send(&s, iov, 2, &done);
    if (status != TF_OK) {
        PyObject *expected = PyLong_FromSsize_t(TF_HEADER_SIZE + len);
        if (expected != NULL) {
            Progress p = {"frame", "", 0, done, expected};
            raise_send_failure(&s, status, &p);
            Py_DECREF(expected);
        }
    }
    if (stream_close(&s) < 0 || status != TF_OK) {
        return NULL;
    }
    Py_RETURN_NONE;
}


PyObject *
send_all_buffer(module_state *st, PyObject *sock, Py_buffer *view)
{
    if (is_connection(st, sock)) {
        sock = connection_socket(sock);
        if (sock == NULL) {
            return NULL;
        }
    }
    Stream s;
    if (stream_open(&s, st, sock) < 0) {
        return NULL;
    }
    struct iovec iov = {view->buf, (size_t)view->len};
    size_t done = 0;
    tf_status status = stream_send(&s, &iov, 1, &done);
    if (status != TF_OK) {
        PyObject *expected = PyLong_FromSsize_t(view->len);
        if (expected != NULL) {
            Progress p = {"data", "", 0, done, expected};
            raise_send_failure(&s, status, &p);
            Py_DECREF(expected);
        }
    }
    if (stream_close(&s) < 0 || status != TF_OK) {
        return NULL;
    }
    Py_RETURN_NONE;
}

int
non_negative(const char *name, Py_ssize_t v)
{
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0, got %zd", name, v);
        return -1;
    }
    return 0;
}

int
size_arg(PyObject *obj, const char *name, Py_ssize_t deflt, Py_ssize_t *out)
{
    if (obj == NULL) {
        *out = deflt;
        return 0;
    }
    Py_ssize_t v = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    if ((v == -1 && PyErr_Occurred()) || non_negative(name, v) < 0) {
        return -1;
    }
    *out = v;
    return 0;
}
