/* The Connection, Decoder and Receiver types: their specs, and what the module's
 * functions (_tcpframe.c) call when they are handed a Connection. */
#ifndef TCPFRAME_BINDING_TYPES_H
#define TCPFRAME_BINDING_TYPES_H

#include "binding.h"

extern PyType_Spec connection_spec;
extern PyType_Spec decoder_spec;
extern PyType_Spec receiver_spec;
extern PyType_Spec window_spec;

int is_connection(module_state *st, PyObject *obj);
/* One frame through the Connection's buffer; max_size < 0 means its own. */
PyObject *connection_read_frame(PyObject *conn, Py_ssize_t max_size);
PyObject *connection_send_frame(PyObject *conn, const char *data, Py_ssize_t len);

#endif
