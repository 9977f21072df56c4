/* The binding's base layer, shared by every binding_*.c file: the module
 * state, the per-call view of a socket (Stream) and the exceptions that say
 * how far a transfer got.  It knows nothing of the Connection and Decoder
 * types (binding_types.h) or of the module's functions (_tcpframe.c): the
 * files depend in one direction, module -> types -> stream driver.
 *
 * The memory rule of the whole binding: a pointer into memory we own (a
 * decoder buffer, a bytes object being filled, a header on the stack) is
 * never handed to Python code.  Python code -- a wrapped socket's methods,
 * __buffer__, an iterator, a signal handler -- can run at many points of a
 * call, and it could keep such a pointer (a memoryview slice survives
 * release()) and write through it after the memory moved.  Wrapped sockets
 * therefore read into and send from Python objects of their own (see
 * binding_stream.c), and every caller holds strong references across any
 * call that can run Python code.
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

/* "No timeout", said once: a socket whose gettimeout() is None, or so large
 * (past ~30 years) that a deadline would overflow and mean nothing. */
#define NO_TIMEOUT (-1.0)
#define TIMEOUT_CEILING 1e9

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *Py_NewRef(PyObject *o) { Py_INCREF(o); return o; }
static inline PyObject *Py_XNewRef(PyObject *o) { Py_XINCREF(o); return o; }
#endif

typedef struct {
    PyObject *socket_type;      /* socket.socket: the one type whose fd we drive */
    PyObject *socket_kind;      /* _socket.socket's C-level `type` getter */
    PyObject *socket_timeout;   /* socket.timeout, raised by wrapped sockets */
    PyObject *ConnectionClosed;
    PyObject *FrameError;
    PyObject *FrameTooLarge;
    PyObject *TransferTimeout;
    PyObject *ConnectionType;   /* tcpframe._tcpframe.Connection */
    PyObject *DecoderType;      /* tcpframe._tcpframe.Decoder */
    PyObject *ReceiverType;     /* tcpframe._tcpframe.Receiver */
    PyObject *WindowType;       /* tcpframe._tcpframe.ReceiveWindow */
} module_state;

static inline module_state *
get_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

/* The state of the module that made `ours` (a type with tp_new `new`), found
 * from `type`, which may be a Python subclass of it. */
module_state *state_from_type(PyTypeObject *type, newfunc new);

/* The pending exception as one object: 3.12's API, emulated before it. */
PyObject *take_exception(void);
void put_exception(PyObject *exc);

/* ------------------------------------------------------------- sockets */

typedef enum { FOR_RECV = 1, FOR_SEND = 2 } stream_use;

/* Check that obj can carry frames: a SOCK_STREAM socket.socket (or
 * subclass), or an object with recv_into()/sendall() as `use` needs.
 * TypeError / ValueError naming what was passed otherwise. */
int check_stream_socket(module_state *st, PyObject *obj, int use);

/* One call's view of a socket: either its file descriptor driven by the C
 * core, or -- for anything that is not exactly socket.socket (SSLSocket, a
 * subclass, a wrapper) -- its own recv_into()/sendall() methods, so TLS and
 * cooperative sockets are never bypassed. */
typedef struct {
    tf_hooks hooks;          /* first: the core hands it back to our hooks */
    PyThreadState *tstate;
    module_state *st;
    PyObject *sock;          /* a strong reference for the whole call */
    int wrapped;
    double timeout;          /* the socket's own timeout, or NO_TIMEOUT */
    int send_unknown;        /* wrapped: a sendall() failed part way, maybe */
    PyObject *scratch;       /* wrapped: the bytearray recv_into() fills */
    tf_io io;
} Stream;

/* stream_open takes a reference to sock before it runs any Python code and
 * holds it until stream_close: every successful open is closed exactly once.
 * A wrapped socket's timeout is never changed (other threads may share the
 * socket): the deadline is checked before each of its method calls. */
int stream_open(Stream *s, module_state *st, PyObject *sock, int use);
void stream_close(Stream *s);
tf_status stream_recv_exact(Stream *s, char *buf, size_t n, size_t *done);
tf_status stream_recv_some(Stream *s, char *buf, size_t n, size_t *got);
tf_status stream_send(Stream *s, struct iovec *iov, int cnt, size_t *done);

/* ------------------------------------------------------------ failures */

/* What a failed transfer was moving, for its exception's message and fields. */
typedef struct {
    const char *what;         /* "frame", "data", ... */
    size_t done;              /* bytes of the item moved, prefix included */
    Py_ssize_t expected;      /* the item's size, or -1 when not known (None) */
    const char *prefix;       /* received: raw bytes consumed before `rest` */
    size_t prefix_len;        /* (a frame's header, when the payload failed) */
    const char *rest;         /* received: the done - prefix_len bytes after it */
    int kept;                 /* a Connection keeps the bytes: retry is safe */
    int counts_frames;        /* sent: `frames` counts whole frames that left */
    size_t frames;            /* (a Connection's write buffer, send_many()) */
    const char *advice;       /* sent: what now, instead of the default words */
} Progress;

/* Raise what a failed receive or send means: ConnectionClosed (.partial),
 * TransferTimeout (.partial or .sent), OSError; TF_ABORTED means a Python
 * exception is already set, which gets a note of the progress (3.11+).
 * A send that counts frames gives every exception it raises .sent and
 * .frames_sent (TransferTimeout has them anyway): an OSError or a signal
 * handler's exception cut a batch of frames just as exactly. */
void raise_recv_failure(Stream *s, tf_status status, const Progress *p);
void raise_send_failure(Stream *s, tf_status status, const Progress *p);

/* Raise cls(*args) built from a Py_BuildValue format. */
void raise_new(PyObject *cls, const char *format, ...);
void raise_bad_header(module_state *st, const unsigned char *header);
void raise_too_large_to_receive(module_state *st, const unsigned char *header, size_t n,
                                Py_ssize_t max_size);
void raise_too_large_to_send(module_state *st, Py_ssize_t size);

/* ----------------------------------------------------------- arguments */

/* A size argument: an int >= 0, or `deflt` when absent (obj NULL).  A
 * caller's mistake is ValueError/TypeError, never a FrameError, which is
 * for what a peer sends. */
int size_arg(PyObject *obj, const char *name, Py_ssize_t deflt, Py_ssize_t *out);
/* A max_size argument: as size_arg, but None means `deflt` too, and any
 * value past MAX_SIZE means MAX_SIZE (no frame is larger). */
int max_size_arg(PyObject *obj, Py_ssize_t deflt, Py_ssize_t *out);

/* ------------------------------------------------------ frames, plainly */

/* Receive into *result (a bytes object of which the first *got bytes are
 * filled) until it holds n bytes, growing it from GROW_START as data comes.
 * Returns the status and leaves *result resized to *got on failure (NULL,
 * with MemoryError set and TF_ABORTED returned, if memory ran out). */
tf_status recv_growing_into(Stream *s, Py_ssize_t n, PyObject **result, size_t *got);

/* The module's functions on a socket (not a Connection): one Stream each. */
PyObject *read_frame(module_state *st, PyObject *sock, Py_ssize_t max_size);
PyObject *send_frame(module_state *st, PyObject *sock, const char *data, Py_ssize_t len);
PyObject *send_all_to(module_state *st, PyObject *sock, const char *data, Py_ssize_t len);
PyObject *receive_all_from(module_state *st, PyObject *sock, Py_ssize_t n);
int receive_into_from(module_state *st, PyObject *sock, Py_buffer *view);
/* Within an open stream: the frame, or -1 with the exception set. */
int send_frame_on(Stream *s, const char *data, Py_ssize_t len);
int send_all_on(Stream *s, const char *data, Py_ssize_t len);

#endif
