/* The DNS fast path's C API (dnsfast.c): a table of prepared answers, the
 * response rate limiter, and the UDP loop that answers from them with the
 * GIL released. cffi parses this file as it stands (routechain/_build.py):
 * plain declarations only, no include guards, no macros, no includes. C
 * files include <stdint.h> and <stddef.h> before it.
 *
 * Threads: each UDP socket has a loop of its own (rc_dns_udp_serve, a
 * thread with the GIL released); Python's DNS thread answers what the loops
 * keep for it, and publishes answers. The table is a seqlock (one writer
 * at a time: Python serialises put and clear), the limiter has a spinlock,
 * the kept datagrams are a ring with one producer (the loop) and one
 * consumer (Python), counters have one writer each (relaxed atomics). */

/* How a query met the fast path, for the counters (rc_dns_stats.kinds). */
enum rc_dns_kind {
    RC_DNS_NOERROR = 0,      /* answered from the table: NOERROR */
    RC_DNS_NXDOMAIN,         /* answered from the table: NXDOMAIN */
    RC_DNS_REFUSED,          /* answered from the table: REFUSED (outside every zone) */
    RC_DNS_PASS_MISS,        /* plain, not in the table yet: Python answers it */
    RC_DNS_PASS_OTHER,       /* not plain (opcode, flags, EDNS options, type...): Python */
    RC_DNS_PASS_BIG,         /* in the table, larger than the client takes: Python truncates */
    RC_DNS_RATE_DROP,        /* answer limited and not sent */
    RC_DNS_RATE_SLIP,        /* answer limited and sent truncated (TC) */
    RC_DNS_SEND_ERROR,       /* sendmmsg refused it: as if lost on the way */
    RC_DNS_PASS_DROPPED,     /* for Python, whose kept ring is full: dropped */
    RC_DNS_KIND_COUNT
};

/* Why rc_dns_table_put() refused an answer (returned negated), or 0. */
enum rc_dns_put {
    RC_DNS_PUT_OK = 0,
    RC_DNS_PUT_NOT_PLAIN,    /* the query is not one the fast path would look up */
    RC_DNS_PUT_NOT_ANSWER,   /* the reply is not this query's whole answer */
    RC_DNS_PUT_TOO_BIG,      /* the answer is longer than RC_DNS_ANSWER_MAX */
    RC_DNS_PUT_CROWDED       /* too many keys share its hash run: not stored */
};

enum rc_dns_limits {
    RC_DNS_BATCH = 32,       /* datagrams per recvmmsg/sendmmsg */
    RC_DNS_QUERY_MAX = 65535,/* a datagram read whole, as Python's recvfrom(65535) */
    RC_DNS_ANSWER_MAX = 4096,/* longest answer kept: far above any plain PTR's */
    RC_DNS_REPLY_MAX = 4400, /* a composed reply: answer + the query's question */
    RC_DNS_KEPT_BYTES = 1048576  /* datagrams a UDP loop keeps for Python: 1 MiB of them */
};

/* Counters of one UDP loop: written only by its thread, read by anyone. */
struct rc_dns_stats {
    uint64_t received;       /* datagrams read */
    uint64_t kinds[16];      /* by enum rc_dns_kind */
    uint64_t sent;           /* replies the loop sent itself */
    uint64_t read_errors;    /* recvmmsg failed other than EAGAIN */
};

struct rc_dns_table;         /* csrc/dnsfast.c; memory laid out by rc_dns_table_init */
struct rc_dns_rrl;
struct rc_dns_udp;

/* The table of prepared answers: up to `entries` answers, `arena` bytes of
 * names and answers together; when either is full the next put clears it
 * (bounded as dnsanswer.Index's memo is; the next misses fill it again),
 * counted in rc_dns_table_resets(). */
size_t rc_dns_table_bytes(uint32_t entries, uint32_t arena);
struct rc_dns_table *rc_dns_table_init(void *mem, uint32_t entries, uint32_t arena,
                                       uint64_t salt);
void rc_dns_table_clear(struct rc_dns_table *t);
uint32_t rc_dns_table_count(const struct rc_dns_table *t);
uint64_t rc_dns_table_resets(const struct rc_dns_table *t);

/* Publish reply as the answer to every query that asks what `query` asks
 * (the same lower-case name, type and EDNS/DO state): 0, or
 * -(enum rc_dns_put). `outcome` is an enum rc_dns_kind, one of the three
 * answers. */
int rc_dns_table_put(struct rc_dns_table *t, const uint8_t *query, size_t qlen,
                     const uint8_t *reply, size_t rlen, int outcome);

/* The reply to query from the table, into out (cap bytes), as the slow path
 * gives it, for UDP (udp: the client's size limit) or TCP: its length;
 * 0 if the fast path does not answer it, with *kind saying why (a pass
 * kind) or, when answered, which answer it is. */
size_t rc_dns_answer(const struct rc_dns_table *t, const uint8_t *query, size_t qlen,
                     int udp, uint8_t *out, size_t cap, int *kind);

/* Over TCP (RFC 7766 8: 2-octet length, then the message): the answers to
 * the whole queries at the start of in (len bytes), in order, framed, into
 * out (cap bytes), up to the first the table does not answer or the first
 * whose answer does not fit: their length; *used says how many bytes of in
 * they took, counts[kind] how many of each answer (RC_DNS_NOERROR..
 * RC_DNS_REFUSED) it gave. */
size_t rc_dns_tcp_answer(const struct rc_dns_table *t, const uint8_t *in, size_t len,
                         size_t *used, uint8_t *out, size_t cap, uint64_t *counts);

/* RRL, as routechain/rrl.py's RateLimiter (the reference this is held
 * equal to): a bucket per (client prefix, answer or error), at most
 * table_max of them. Keys: rc_dns_client_key(). */
size_t rc_dns_rrl_bytes(uint32_t table_max);
struct rc_dns_rrl *rc_dns_rrl_init(void *mem, uint32_t table_max, double rate, double errors,
                                   uint32_t slip, uint64_t salt);
/* 0 send, 1 drop, 2 slip: rrl.SEND, DROP, SLIP. */
int rc_dns_rrl_check(struct rc_dns_rrl *r, uint64_t client, int error, double now);
/* New limits (a reload): every bucket forgotten, as a new RateLimiter. */
void rc_dns_rrl_configure(struct rc_dns_rrl *r, double rate, double errors, uint32_t slip);
uint32_t rc_dns_rrl_count(const struct rc_dns_rrl *r);

/* A client's RRL key from its address bytes (4: IPv4, 16: IPv6): its /24
 * or /56, as rrl.prefix() cuts it. */
uint64_t rc_dns_client_key(const uint8_t *addr, size_t len);

/* One UDP socket's loop: its socket (non-blocking), an eventfd that stops
 * it, an eventfd it wakes Python with when it keeps a datagram, and the
 * table and limiter it answers with (both outlive it). */
struct rc_dns_udp_config {
    int fd;
    int stop_fd;
    int wake_fd;
    const struct rc_dns_table *table;
    struct rc_dns_rrl *rrl;
};

/* Its state and buffers, laid out over mem (rc_dns_udp_bytes() long). */
size_t rc_dns_udp_bytes(void);
struct rc_dns_udp *rc_dns_udp_init(void *mem, const struct rc_dns_udp_config *config);

/* Run the loop until stop_fd is readable (0) or poll fails (-errno): read
 * (the socket blocking, with SO_RCVTIMEO: how long a stop may wait)
 * in batches, answer every datagram the table answers (rate limited),
 * keep the others for Python (at most RC_DNS_KEPT_BYTES of them; more are
 * dropped, counted) and wake it. Call with the GIL released (cffi does). */
int rc_dns_udp_serve(struct rc_dns_udp *u);

/* For Python's thread: the first datagram kept (its bytes, *len, and its
 * sender's RRL key, *client), NULL if none; send reply to its sender (0 or
 * -errno); pop it, so the loop may reuse its room. */
const uint8_t *rc_dns_udp_first(struct rc_dns_udp *u, size_t *len, uint64_t *client);
int rc_dns_udp_reply(struct rc_dns_udp *u, const uint8_t *reply, size_t len);
void rc_dns_udp_pop(struct rc_dns_udp *u);

void rc_dns_udp_read_stats(const struct rc_dns_udp *u, struct rc_dns_stats *out);
