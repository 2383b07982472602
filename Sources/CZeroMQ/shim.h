#ifndef DROVER_CZEROMQ_SHIM_H
#define DROVER_CZEROMQ_SHIM_H

#include <zmq.h>

// Debian's libzmq 4.3.4 honours this draft option but its header does not declare it.
// With it set, a CURVE server whose ZAP handler denies a client refuses the connection,
// instead of accepting any key.
#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93
#endif

#endif
