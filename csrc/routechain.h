/* route-chain's C API: the reply core (reply.c) and the serving loop
 * (serve.c). cffi parses this file as it stands (routechain/_build.py), so it
 * holds plain declarations only: no include guards, no macros, no includes,
 * no inline code. C files include <stdint.h> and <stddef.h> before it. */

/* Why a packet got no reply. rc_reply() returns these negated. */
enum rc_drop {
    RC_DROP_NONE = 0,
    RC_DROP_TRUNCATED,       /* shorter than its headers, or a length field lies */
    RC_DROP_BAD_VERSION,     /* neither IPv4 nor IPv6 */
    RC_DROP_BAD_HEADER,      /* IHL < 5, bad IPv4 header checksum */
    RC_DROP_NOT_OURS,        /* destination outside every chain */
    RC_DROP_FRAGMENT,        /* a non-first fragment */
    RC_DROP_ICMP_ERROR,      /* RFC 1122 3.2.2 / RFC 4443 2.4(e): never answer an error */
    RC_DROP_ICMP_INFO,       /* an informational message other than Echo Request */
    RC_DROP_MULTICAST,       /* multicast or broadcast destination */
    RC_DROP_BAD_SOURCE,      /* unspecified, loopback, multicast or broadcast source */
    RC_DROP_EXT_HEADERS,     /* too many IPv6 extension headers */
    RC_DROP_BAD_CHECKSUM,    /* upper-layer checksum wrong at the destination */
    RC_DROP_TCP_RST,         /* RFC 9293 3.10.7.1: a RST gets no reply */
    RC_DROP_SILENT,          /* the answering hop is silent */
    RC_DROP_NO_ROOM,         /* headroom or capacity too small for the reply */
    RC_DROP_NO_NEXT_HEADER,  /* RFC 8200 4.7: IPv6 No Next Header at the destination */
    RC_DROP_COUNT
};

/* What a reply is, for the counters. */
enum rc_kind {
    RC_KIND_TIME_EXCEEDED = 0,
    RC_KIND_PORT_UNREACH,
    RC_KIND_ECHO_REPLY,
    RC_KIND_TCP_RST,
    RC_KIND_PROTO_UNREACH,   /* v4 Protocol Unreachable, v6 Parameter Problem 1 */
    RC_KIND_HOST_UNREACH,    /* beyond the chain, or below its host */
    RC_KIND_TOO_BIG,         /* v4 Fragmentation Needed, v6 Packet Too Big */
    RC_KIND_ENDING,          /* the chain's `end`: network, host, prohibited */
    RC_KIND_COUNT
};

enum rc_limits {
    RC_HEADROOM = 64,        /* >= IPv6 + ICMPv6 header (48), rounded up */
    RC_MAX_HOPS = 255,
    RC_HOP_SILENT = 1        /* hop_flags bit: the hop never answers */
};

/* How a chain ends (rc_chain.end): its last hop answers as a host, or as a
 * router with no route that sends Destination Unreachable with this code. */
enum rc_end {
    RC_END_HOST = 0,
    RC_END_NET,              /* !N: v4 3/0, v6 1/0 (no route) */
    RC_END_HOST_UNREACH,     /* !H: v4 3/1, v6 1/3 (address unreachable) */
    RC_END_PROHIBITED        /* !X: v4 3/13, v6 1/1 (administratively prohibited) */
};

/* One router at one hop of a chain with per-hop properties. Branch 0 of hop
 * k is hops[k]; the ECMP alternatives of hop k are hops[first_alt ..
 * first_alt + n_alts - 1], after hops[length]. ext_len bytes at ext + ext_off
 * are the router's RFC 4884 extension structure, built by Python with its
 * checksum and every label TTL zero; ext_sum is their sum (RFC 1071, not
 * folded) and n_labels the label stack entries whose TTL the core fills in. */
struct rc_hop {
    uint8_t addr[16];        /* its address; IPv4 in the first 4 bytes */
    uint32_t ext_sum;
    uint32_t ext_off;
    uint16_t ext_len;        /* 0: no extension structure */
    uint16_t mtu;            /* next-hop MTU; 0: none */
    uint16_t first_alt;
    uint8_t n_alts;          /* branch 0 only */
    uint8_t n_labels;
    uint8_t reply_ttl;       /* the TTL its replies leave with, 1 .. 255 */
    uint8_t flags;           /* RC_HOP_SILENT */
    uint8_t hop;             /* k: which hop it is */
};

/* One chain: host address and prefix, as assigned to the TUN. Hop k
 * (1 <= k <= length) has the address host + k; a probe to D arriving with
 * TTL t has arrived when D <= host + t. */
struct rc_chain {
    uint8_t family;          /* 4 or 6 */
    uint8_t prefix_len;
    uint8_t length;          /* hops in the chain, 1 .. RC_MAX_HOPS */
    uint8_t reply_ttl;       /* initial TTL of host+1; host+k sends reply_ttl - (k - 1) */
    uint8_t host[16];        /* network byte order; IPv4 in the first 4 bytes */
    uint8_t mask[16];        /* prefix mask, same layout */
    uint8_t hop_flags[256];  /* hop_flags[k] for hop host + k */
    uint8_t end;             /* enum rc_end */
    uint16_t min_mtu;        /* the smallest rc_hop.mtu in the chain; 0: none */
    uint16_t n_hops;         /* entries in hops: length + 1 + alternatives */
    const struct rc_hop *hops;   /* NULL: no per-hop properties (see rc_hop) */
    const uint8_t *ext;      /* the extension structures rc_hop points into */
    /* Timing, only for a chain that has some (else both NULL), one entry
     * per router as rc_where numbers them: timing[k] for hop k (then the
     * '+' alternatives), and hop_tat[k], the state of its rate limit,
     * written by every queue (atomically) while the table lives. */
    const struct rc_hop_timing *timing;
    uint64_t *hop_tat;
};

/* A token bucket in the GCRA form (ITU-T I.371 virtual scheduling): one
 * 64-bit word of state, the theoretical arrival time (TAT) of the next
 * reply, so that queues can share one bucket through compare-and-swap.
 * Each reply costs interval_ns; up to tolerance_ns of credit may be spent
 * ahead, i.e. burst = tolerance_ns / interval_ns + 1. interval_ns 0: off. */
struct rc_bucket {
    uint64_t interval_ns;
    uint64_t tolerance_ns;
};

/* What hop k of a chain with timing does to its replies. */
struct rc_hop_timing {
    uint32_t delay_us;       /* before the reply is written */
    uint32_t jitter_us;      /* uniform within +/- jitter_us, never below 0 */
    uint64_t loss;           /* P(silent) * 2^32: 0 never, 2^32 always */
    struct rc_bucket rate;   /* the hop's own ICMP rate limit */
};

/* Read-only once built (but for the hop_tat cells it points at). Chains
 * do not overlap and are sorted by family (4 before 6), then by the first
 * address of their prefix (host & mask): the lookup is a binary search.
 * The limits ride in the table so that a reload swaps them with the chains. */
struct rc_table {
    uint32_t n_chains;
    const struct rc_chain *chains;
    uint32_t limited;        /* nonzero: the daemon or the source limit is on */
    struct rc_bucket daemon; /* each queue's share of the daemon-wide limit */
    struct rc_bucket source; /* per source address (IPv6: per /64), shared */
};

/* Who answered a probe: the chain (index into table->chains) and its
 * router, numbered as rc_chain.timing is: k for hop k itself, and past
 * length the hops' '+' alternatives, hop by hop in the order written. */
struct rc_where {
    uint32_t chain;
    uint32_t router;
};

/* Build the reply to the packet at buf + headroom (len bytes) in place, in
 * a buffer of cap bytes. Returns the reply's length and sets *off to where it
 * starts in buf, and *where (unless NULL) to who answered; or returns
 * -(enum rc_drop). No system call, no allocation. */
int rc_reply(uint8_t *buf, size_t headroom, size_t len, size_t cap,
             const struct rc_table *table, size_t *off, struct rc_where *where);

/* The kind of a reply rc_reply() built, from its bytes; -1 if none. */
int rc_reply_kind(const uint8_t *reply, size_t len);

/* What pacing did to a reply the core built (serve.c, pace.c). */
enum rc_pace {
    RC_PACE_DELAYED = 0,     /* waited in the pool, then sent */
    RC_PACE_LOST,            /* the hop's loss: never sent */
    RC_PACE_HOP_LIMITED,     /* the hop's own rate limit */
    RC_PACE_SOURCE_LIMITED,  /* RFC 4443 2.4(f), RFC 1812 4.3.2.8: per source */
    RC_PACE_GLOBAL_LIMITED,  /* the same, daemon-wide */
    RC_PACE_POOL_FULL,       /* due later, but no free slot of its size */
    RC_PACE_OVERLOADED,      /* due when the queue's writes are booked full */
    RC_PACE_COUNT
};

/* How late a delayed reply was written, after the time it was due:
 * bucket i holds those at most rc_late_edges_ns[i] late (50 us .. 10 ms),
 * the last one the rest. */
enum { RC_LATE_BUCKETS = 9 };
extern const uint64_t rc_late_edges_ns[RC_LATE_BUCKETS - 1];

/* Per-queue counters: written only by the queue's worker, read by anyone. */
struct rc_stats {
    uint64_t received;
    uint64_t sent;
    uint64_t replies[8];     /* by enum rc_kind */
    uint64_t drops[16];      /* by enum rc_drop */
    uint64_t paced[8];       /* by enum rc_pace */
    uint64_t late[RC_LATE_BUCKETS]; /* delayed replies by how late they went out */
    uint64_t late_ns;        /* the sum of that lateness */
    uint64_t write_errors;
    uint64_t read_errors;
    int32_t last_write_errno;
    int32_t last_read_errno;
};

/* One reply's place in a pool (pace.c). */
struct rc_slot {
    uint32_t next;           /* free list link */
    uint32_t len;
};

/* One entry of a pool's heap: when a reply is due and which slot holds it.
 * The keys sit in the heap itself, so keeping it in order walks one array. */
struct rc_due {
    uint64_t due_ns;         /* CLOCK_MONOTONIC */
    uint32_t seq;            /* order among equal due times */
    uint32_t slot;
};

/* Writes booked for one slice of time in a pool's book (pace.c). */
struct rc_book_bin {
    uint32_t slice;          /* due_ns >> RC_BOOK_SHIFT, truncated: which slice */
    uint32_t writes;         /* replies due within it */
};

/* A queue's delayed replies: slots of two sizes, preallocated, ordered by
 * due time in a binary heap; and the book of the writes they will cost,
 * slice by slice of the time ahead. Written and read by its worker alone. */
struct rc_pool {
    struct rc_slot *slots;   /* n_small + n_large; small ones first */
    struct rc_due *heap;     /* soonest due first */
    uint8_t *small;          /* n_small * RC_SLOT_SMALL bytes */
    uint8_t *large;          /* n_large * RC_SLOT_LARGE bytes */
    uint32_t n_small;
    uint32_t n_large;
    uint32_t free_small;     /* free list heads; RC_SLOT_NONE when empty */
    uint32_t free_large;
    uint32_t waiting;        /* slots in the heap */
    uint32_t seq;
    struct rc_book_bin *book;  /* RC_BOOK_BINS slices, the next second or so */
    uint32_t book_cap;       /* most writes a slice takes; 0: none measured yet */
    uint32_t write_ns16;     /* what one write costs, a moving average, in ns/16 */
};

enum rc_pool_sizes {
    RC_SLOT_SMALL = 256,     /* Time Exceeded to a traceroute or mtr probe, with extensions */
    RC_SLOT_LARGE = 1536,    /* up to a 1500-byte Echo Reply; quotes stop at 576 / 1280 */
    RC_SLOT_NONE = 0xffffffff,
    RC_BOOK_SHIFT = 18,      /* a slice of the book: 2^18 ns, 262 us */
    RC_BOOK_BINS = 4096,     /* 1.07 s ahead; replies due later are not booked */
    RC_BOOK_SHARE = 75       /* percent of a slice the writes due in it may take */
};

/* Bytes of memory rc_pool_init() carves a pool of this many slots from. */
size_t rc_pool_bytes(uint32_t n_small, uint32_t n_large);

/* Lay the pool out over mem (rc_pool_bytes() long; need not be zeroed:
 * the reply arenas are not touched until used), every slot free. */
void rc_pool_init(struct rc_pool *pool, void *mem, uint32_t n_small, uint32_t n_large);

/* One serving loop. The live table is swapped by rc_table_publish(); the
 * worker records the table it holds in in_use (NULL while it waits), so
 * the publisher knows when an old table may be freed. */
struct rc_worker {
    int fd;                  /* TUN queue, non-blocking */
    int stop_fd;             /* eventfd: readable means stop */
    const struct rc_table **live;
    const struct rc_table *in_use;
    uint8_t *buf;
    size_t cap;
    struct rc_stats stats;
    /* Pacing (pace.c): the queue's own pool, random generator and share of
     * the global limit; the per-source buckets are shared by all queues. */
    struct rc_pool pool;
    uint64_t rng;            /* generator state; seeded per start */
    uint64_t daemon_tat;     /* this queue's share of table->daemon */
    uint64_t *source_tat;    /* source_mask + 1 cells */
    uint32_t source_mask;
    uint64_t source_salt;    /* keys the source hash, the same in every queue */
};

/* Serve until stop_fd is readable: returns 0, or -errno if poll fails. */
int rc_serve(struct rc_worker *w);

/* Make table the live one; returns the one it replaced. */
const struct rc_table *rc_table_publish(const struct rc_table **live,
                                        const struct rc_table *table);

/* Nonzero while the worker may still read table. */
int rc_worker_holds(const struct rc_worker *w, const struct rc_table *table);

/* A consistent-enough copy of the worker's counters. */
void rc_stats_read(const struct rc_worker *w, struct rc_stats *out);
