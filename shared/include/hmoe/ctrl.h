/* hmoe/ctrl.h: the control-plane codec. Every ZeroMQ message is one protobuf Envelope
 * (proto/hmoe_ctrl.proto). Incoming bytes are hostile: size-capped, unpacked into a fixed-size
 * arena (so a message can never make the process allocate more than the arena), version- and
 * field-checked before anyone reads them. Implemented in proto/ctrl.c (lib hmoe_proto). */
#ifndef HMOE_CTRL_H
#define HMOE_CTRL_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "hmoe/status.h"
#include "hmoe_ctrl.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HMOE_CTRL_PROTO_VERSION 1u
#define HMOE_CTRL_MAX_MSG (1u << 20)      /* bytes of one encoded Envelope */
#define HMOE_CTRL_MAX_TOKENS (256u << 10) /* token ids in one Request / StepBegin */
#define HMOE_CTRL_MAX_STR 65536u          /* bytes of any one string field */
#define HMOE_CTRL_ARENA_BYTES (8u << 20)  /* default decode arena */

/* Bump allocator handed to protobuf-c's unpack. Not thread-safe; one per thread/socket loop.
 * All memory of a decoded Envelope lives here until the next reset. */
struct hmoe_ctrl_arena {
    unsigned char *buf;
    size_t cap, used;
    ProtobufCAllocator alloc;
};

/* cap: bytes (0 = HMOE_CTRL_ARENA_BYTES). Returns HMOE_E_NOMEM. */
enum hmoe_status hmoe_ctrl_arena_init(struct hmoe_ctrl_arena *a, size_t cap);
void hmoe_ctrl_arena_free(struct hmoe_ctrl_arena *a); /* zeroed or freed arena: no-op */
void hmoe_ctrl_arena_reset(struct hmoe_ctrl_arena *a);

/* Decodes len bytes into *out (memory in the arena, which is reset first). Checks: len <=
 * HMOE_CTRL_MAX_MSG, well-formed protobuf that fits the arena, proto_version ==
 * HMOE_CTRL_PROTO_VERSION, a body is set, enum values known, counts and strings within limits.
 * Returns HMOE_E_PROTO with a message naming the defect. */
enum hmoe_status hmoe_ctrl_decode(struct hmoe_ctrl_arena *a, const void *buf, size_t len,
                                  Hmoe__Envelope **out);

/* Packs env (proto_version is set here) into a malloc'ed buffer the caller frees. */
enum hmoe_status hmoe_ctrl_encode(Hmoe__Envelope *env, uint8_t **out, size_t *len);

/* Name of a body case ("hello", "step_end", ...); "none" / "unknown" otherwise. */
const char *hmoe_ctrl_body_name(Hmoe__Envelope__BodyCase c);

/* Sends env on a ZeroMQ socket without blocking: for a ROUTER, ident/ident_len address the peer
 * (frames [ident][payload]); for a DEALER pass ident NULL. HMOE_E_IO when the peer is gone or
 * the send would block. */
enum hmoe_status hmoe_ctrl_send(void *sock, const void *ident, size_t ident_len,
                                Hmoe__Envelope *env);

/* One received message. ident holds the ROUTER identity (empty for a DEALER). */
struct hmoe_ctrl_msg {
    unsigned char ident[256];
    size_t ident_len;
    Hmoe__Envelope *env; /* in the arena */
};

/* Receives one message (ZMQ_DONTWAIT after the socket polled readable; timeout_ms > 0 waits
 * that long, 0 does not wait). router: the socket is a ROUTER (first frame is the identity).
 * Extra or missing frames and undecodable payloads return HMOE_E_PROTO (the message is
 * consumed, the socket stays usable); HMOE_E_TIMEOUT when nothing arrived. */
enum hmoe_status hmoe_ctrl_recv(void *sock, int router, int timeout_ms, struct hmoe_ctrl_arena *a,
                                struct hmoe_ctrl_msg *m);

#ifdef __cplusplus
}
#endif
#endif
