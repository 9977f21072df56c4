/* Shared by the binding's files (binding_*.c, _tcpframe.c): the module
 * state, the per-call view of a socket (Stream), and the helpers that turn
 * the plain-C core's statuses into tcpframe's exceptions.
 *
 * Not built on the Limited API: a frame's bytes object grows as its payload
 * arrives (so a peer announcing 99,999,999 bytes and sending ten costs ten)
 * with _PyBytes_Resize, whose realloc moves no data for large blocks.  The
 * stable ABI has no way to grow a bytes object; every alternative copies. */
#ifndef TCPFRAME_BINDING_H
#define TCPFRAME_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "frame_header.h"
#include "frame_io.h"

/* A bytes object for a frame starts at most this big and doubles as data
 * arrives: memory follows the bytes received, not the length announced. */
#define GROW_START ((Py_ssize_t)1 << 20)
/* Wrapped sockets (TLS) get header and payload joined into one sendall()
 * below this size, so two small writes never meet Nagle's algorithm. */
#define JOIN_LIMIT ((Py_ssize_t)1 << 14)

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *Py_NewRef(PyObject *o) { Py_INCREF(o); return o; }
#endif

typedef struct {
    PyObject *socket_type;      /* socket.socket: the one type whose fd we drive */
    PyObject *socket_timeout;   /* socket.timeout, raised by wrapped sockets */
    PyObject *ConnectionClosed;
    PyObject *FrameError;
    PyObject *FrameTooLarge;
    PyObject *TransferTimeout;
    PyObject *ConnectionType;   /* tcpframe._tcpframe.Connection */
    PyObject *DecoderType;      /* tcpframe._tcpframe.Decoder */
} module_state;

static inline module_state *
get_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

/* The pending exception as one object: 3.12's API, emulated before it. */
PyObject *take_exception(void);
void put_exception(PyObject *exc);

/* One call's view of a socket: either its file descriptor driven by the C
 * core, or -- for anything that is not exactly socket.socket (SSLSocket, a
 * wrapper) -- its own recv_into()/sendall() methods, so TLS is never bypassed. */
typedef struct {
    tf_hooks hooks;          /* first: the core hands it back to our hooks */
    PyThreadState *tstate;
    module_state *st;
    PyObject *sock;
    int wrapped;
    double timeout;          /* sock.gettimeout(); negative for None */
    int timeout_changed;     /* a wrapped socket's timeout was narrowed */
    tf_io io;
} Stream;

/* stream_open holds a reference to sock until stream_close: every
 * successful open must be closed exactly once. */
int stream_open(Stream *s, module_state *st, PyObject *sock);
int stream_close(Stream *s);
tf_status stream_recv_exact(Stream *s, char *buf, size_t n, size_t *done);
tf_status stream_recv_some(Stream *s, char *buf, size_t n, size_t *got);
tf_status stream_send(Stream *s, struct iovec *iov, int cnt, size_t *done);

/* What a failed call was moving, for its exception's message and fields. */
typedef struct {
    const char *what;         /* "frame", "data", ... */
    const char *prefix;       /* raw bytes already consumed before `partial` */
    size_t prefix_len;        /* (a frame's header, when the payload failed) */
    size_t done;              /* bytes of the item moved, prefix included */
    PyObject *expected;       /* item size, or None: borrowed */
    int kept;                 /* a Connection keeps the bytes: retry is safe */
} Progress;

/* A size argument: an int >= 0, or `deflt` when absent (obj NULL).  A
 * caller's mistake is ValueError/TypeError, never a FrameError, which is
 * for what a peer sends. */
int size_arg(PyObject *obj, const char *name, Py_ssize_t deflt, Py_ssize_t *out);
int non_negative(const char *name, Py_ssize_t v);

/* Raise cls(*args) built from a Py_BuildValue format. */
void raise_new(PyObject *cls, const char *format, ...);
void raise_bad_header(module_state *st, const unsigned char *header);
void raise_too_large_to_receive(module_state *st, const unsigned char *header, size_t n,
                                Py_ssize_t max_size);
void raise_too_large_to_send(module_state *st, Py_ssize_t size);
/* Turn a failed core status into its exception; `rest` holds the bytes
 * moved after p->prefix.  TF_ABORTED means a Python exception is set. */
void raise_recv_failure(Stream *s, tf_status status, const Progress *p, const char *rest);
void raise_send_failure(Stream *s, tf_status status, const Progress *p);

/* Receive into *result (a bytes object of which the first *got bytes are
 * filled) until it holds n bytes, growing it from GROW_START as data comes.
 * Returns the status and leaves *result resized to *got on failure (NULL,
 * with MemoryError set and TF_ABORTED returned, if memory ran out). */
tf_status recv_growing_into(Stream *s, Py_ssize_t n, PyObject **result, size_t *got);

/* One whole frame's payload / one frame sent, on a plain or wrapped socket. */
/* A Connection passed where a socket is expected reads through its buffer
 * (with its own max_size unless one is given: `explicit_max`). */
PyObject *read_frame(module_state *st, PyObject *sock, Py_ssize_t max_size, int explicit_max);
PyObject *recv_exact_bytes(Stream *s, Py_ssize_t n, Progress *p);
PyObject *send_frame(module_state *st, PyObject *sock, const char *data, Py_ssize_t len);
PyObject *send_all_buffer(module_state *st, PyObject *sock, Py_buffer *view);

/* The Connection and Decoder types: specs and what module init needs. */
extern PyType_Spec connection_spec;
extern PyType_Spec decoder_spec;
int is_connection(module_state *st, PyObject *obj);
PyObject *connection_read_frame(PyObject *conn, Py_ssize_t max_size, int use_default);
PyObject *connection_socket(PyObject *conn);
PyObject *connection_send_frame(PyObject *conn, const char *data, Py_ssize_t len);

extern struct PyModuleDef tcpframe_module_def;

/* The module's state from one of its types, or a subclass of one. */
module_state *state_from_type(PyTypeObject *type);

#endif
