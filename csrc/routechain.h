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
    RC_DROP_SILENT,          /* the answering hop is silent, or the port (rc_tcp, rc_udp) */
    RC_DROP_NO_ROOM,         /* headroom or capacity too small for the reply */
    RC_DROP_NO_NEXT_HEADER,  /* RFC 8200 4.7: IPv6 No Next Header at the destination */
    RC_DROP_TCP_HANDSHAKE,   /* the ACK completing a handshake with an open port */
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
    RC_KIND_TCP_SYN_ACK,     /* an open port's answer to a SYN */
    RC_KIND_PROHIBITED,      /* the destination filters the port: v4 3/13, v6 1/1 */
    RC_KIND_COUNT
};

enum rc_limits {
    RC_HEADROOM = 64,        /* >= IPv6 + ICMPv6 header (48), rounded up */
    RC_MAX_HOPS = 255,
    RC_HOP_SILENT = 1,       /* hop_flags bit: the hop never answers */
    RC_MAX_OPEN_PORTS = 16,  /* rc_chain.open_ports */
    RC_MAX_CHAPTERS = 32     /* rc_chain.chapters */
};

/* How a chain ends (rc_chain.end): its last hop answers as a host, or as a
 * router with no route that sends Destination Unreachable with this code. */
enum rc_end {
    RC_END_HOST = 0,
    RC_END_NET,              /* !N: v4 3/0, v6 1/0 (no route) */
    RC_END_HOST_UNREACH,     /* !H: v4 3/1, v6 1/3 (address unreachable) */
    RC_END_PROHIBITED        /* !X: v4 3/13, v6 1/1 (administratively prohibited) */
};

/* What the destination answers to a TCP segment (rc_chain.tcp): to a port
 * in open_ports, or to every port with RC_TCP_OPEN, a SYN gets a SYN-ACK
 * and anything else a RST, keeping no state (RFC 9293 3.10.7.2, LISTEN). */
enum rc_tcp {
    RC_TCP_CLOSED = 0,       /* RST-ACK, RFC 9293 3.10.7.1 */
    RC_TCP_RST,              /* a bare RST, as some filters send */
    RC_TCP_SILENT,           /* nothing */
    RC_TCP_PROHIBITED,       /* Destination Unreachable, administratively prohibited */
    RC_TCP_OPEN              /* every port open */
};

/* What the destination answers to a UDP datagram (rc_chain.udp). */
enum rc_udp {
    RC_UDP_UNREACHABLE = 0,  /* Port Unreachable, RFC 1122 3.2.2.1 / RFC 4443 3.1 */
    RC_UDP_SILENT,
    RC_UDP_PROHIBITED
};

/* How the router in front of hop k picks among hop k's routers
 * (rc_hop.balance of branch 0; docs/stories.md, docs/replies.md). */
enum rc_balance {
    RC_BALANCE_FLOW = 0,     /* addresses, IPv6 flow label, protocol, first 4 upper octets */
    RC_BALANCE_PACKET,       /* those and what changes from probe to probe */
    RC_BALANCE_DESTINATION,  /* the destination address alone */
    RC_BALANCE_COUNT
};

/* What a router changes in the probes it forwards (rc_hop.rewrite), as the
 * quotes of the routers after it show: a NAT's source address and port
 * (the ICMP Echo identifier), a DSCP or ECN re-mark, DF set or cleared. */
enum rc_rewrite {
    RC_REWRITE_SOURCE = 1,   /* source address := nat_addr */
    RC_REWRITE_PORT = 2,     /* UDP/TCP source port, Echo identifier := nat_port */
    RC_REWRITE_DSCP = 4,     /* DSCP := ds >> 2 */
    RC_REWRITE_ECN = 8,      /* ECN := ds & 3 */
    RC_REWRITE_DF_SET = 16,  /* IPv4 only */
    RC_REWRITE_DF_CLEAR = 32,
    RC_REWRITE_ALL = 63
};

/* One router at one hop of a chain with per-hop properties. Branch 0 of hop
 * k is hops[k]; the ECMP alternatives of hop k are hops[first_alt ..
 * first_alt + n_alts - 1], after hops[length]. ext_len bytes at ext + ext_off
 * are the router's RFC 4884 extension structure, built by Python with its
 * checksum and every label TTL zero; ext_sum is their sum (RFC 1071, not
 * folded) and n_labels the label stack entries whose TTL the core fills in.
 *
 * Invariants, checked by rc_table_check() (the reason it gives in []):
 *  - hop is k for hops[k], 1 <= k <= length; an alternative's hop is the
 *    hop it belongs to [HOP_NUMBER].
 *  - The alternatives follow hops[length] hop by hop in order, without a
 *    gap or overlap: the first hop with n_alts has first_alt = length + 1,
 *    the next first_alt + n_alts, and the last ends at n_hops; an
 *    alternative has n_alts 0 [ALTERNATIVES]. (reply.c route_at reads
 *    hops[first_alt + b - 1], b <= n_alts.)
 *  - reply_ttl >= 1 [REPLY_TTL]; flags holds only RC_HOP_SILENT [FLAGS].
 *  - balance is an enum rc_balance, and RC_BALANCE_FLOW on an alternative
 *    (reply.c route_at indexes its hashes by hops[k].balance) [BALANCE].
 *  - Branches of unequal length: an alternative with longer = L > 0 is
 *    followed on its branch by the L routers hops[first_further ..
 *    first_further + L - 1] before the branch rejoins at hop k + 1. They
 *    lie right after hop k's alternatives, alternative by alternative in
 *    order (first_further is 0 where longer is 0), have hop k, and no
 *    n_alts, longer or balance of their own; hop k itself has longer 0;
 *    the chain's longer is the greatest longer, 0 without hops (reply.c
 *    walk_branches reads hops[first_further + i], i < longer, only when
 *    the chain's longer is nonzero) [FURTHER]. The [ALTERNATIVES] layout
 *    counts them: the next hop's first_alt follows them.
 *  - rewrite holds only enum rc_rewrite bits, not both DF bits, no DF bit
 *    in an IPv6 chain, and none on a router further along a branch; the
 *    chain's rewrites is nonzero exactly when some router's rewrite is
 *    (reply.c rewrite_probe runs only then) [REWRITE].
 *  - mtu is 0 or at least the family's minimum (68, RFC 791; 1280, RFC
 *    8200 5); the chain's min_mtu is the least nonzero mtu [MTU].
 *  - ext_off + ext_len <= the chain's ext_bytes [EXT_RANGE].
 *  - ext_len is 0, or holds the 4-octet header and, with labels, an MPLS
 *    object of n_labels entries; and leaves room for the 128-octet
 *    original datagram field under the family's error limit:
 *    ext_len <= 576 - 28 - 128 (IPv4), 1280 - 48 - 128 (IPv6) (reply.c
 *    append_extension subtracts it from that limit) [EXT_LENGTH].
 *  - The structure is version 2, its checksum and every label TTL are zero
 *    and the MPLS object (class 1) comes first when n_labels > 0
 *    [EXT_CONTENT]; ext_sum is its sum [EXT_SUM]. */
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
    uint8_t balance;         /* enum rc_balance; branch 0 only */
    uint8_t longer;          /* an alternative's branch is this many hops longer */
    uint16_t first_further;  /* ... through these routers ('++' lines) */
    uint8_t rewrite;         /* enum rc_rewrite bits */
    uint8_t ds;              /* the DS field's DSCP << 2 | ECN it re-marks to */
    uint16_t nat_port;       /* host order */
    uint8_t nat_addr[16];    /* IPv4 in the first 4 bytes */
};

/* A chapter (docs/stories.md): an address of the chain's prefix, past
 * every address the chain uses, that behaves as an alias of the chain's
 * destination (host + length) entered at hop `start`: a probe to addr
 * arriving with TTL t is answered as a probe to host + length arriving
 * with TTL t + start - 1 (the same routers, branches, balancing, NAT and
 * timing), except that at the destination the host answers from addr,
 * and the quote holds the probe as received. A trace to addr shows the
 * story from line `start` on at its first hop. */
struct rc_chapter {
    uint8_t addr[16];        /* IPv4 in the first 4 bytes */
    uint8_t start;           /* k: the hop a TTL of 1 meets, 2 .. length */
};

/* One chain: host address and prefix, as assigned to the TUN. Hop k
 * (1 <= k <= length) has the address host + k; a probe to D arriving with
 * TTL t has arrived when D <= host + t.
 *
 * Invariants, checked by rc_table_check():
 *  - family is 4 or 6 [FAMILY]; prefix_len fits the family and mask is its
 *    prefix mask [PREFIX].
 *  - length >= 1 [LENGTH] (reply.c answers from hop_flags[length] or
 *    hops[length]); hop_flags holds only RC_HOP_SILENT [FLAGS].
 *  - end is an enum rc_end, and not RC_END_HOST only with hops [END].
 *  - tcp is an enum rc_tcp, udp an enum rc_udp, n_open <=
 *    RC_MAX_OPEN_PORTS [DESTINATION].
 *  - hops NULL: n_hops, min_mtu, ext and ext_bytes are 0/NULL; otherwise
 *    n_hops >= length + 1 [N_HOPS], and every rc_hop invariant holds.
 *  - ext is non-NULL when ext_bytes > 0 [EXT_RANGE].
 *  - timing and hop_tat are both NULL or both set, and then n_timing
 *    covers every router rc_where can name: n_hops with hops, else
 *    length + 1 (serve.c / pace.c read timing[where.router]) [TIMING];
 *    each loss <= 2^32 [LOSS].
 *  - chapters is NULL exactly when n_chapters is 0, and n_chapters <=
 *    RC_MAX_CHAPTERS; each chapter's addr lies inside the prefix (not its
 *    IPv4 broadcast address, RFC 919), past host + length and past every
 *    router's address, the chapters in increasing address order without
 *    repeats; 2 <= start <= length (reply.c find_chapter scans them only
 *    for a probe past the chain) [CHAPTERS]. */
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
    uint8_t longer;          /* the most hops a branch is longer; 0: all equal */
    uint8_t rewrites;        /* nonzero: some router rewrites what it forwards */
    uint16_t n_hops;         /* entries in hops: length + 1 + alternatives */
    uint16_t n_timing;       /* entries in timing and hop_tat */
    uint8_t tcp;             /* enum rc_tcp: ports not in open_ports */
    uint8_t udp;             /* enum rc_udp */
    uint8_t n_open;          /* entries in open_ports */
    uint16_t open_ports[16]; /* RC_MAX_OPEN_PORTS TCP ports that answer SYN-ACK */
    uint32_t ext_bytes;      /* bytes at ext */
    const struct rc_hop *hops;   /* NULL: no per-hop properties (see rc_hop) */
    const uint8_t *ext;      /* the extension structures rc_hop points into */
    /* Timing, only for a chain that has some (else both NULL), one entry
     * per router as rc_where numbers them: timing[k] for hop k (then the
     * '+' alternatives), and hop_tat[k], the state of its rate limit,
     * written by every queue (atomically) while the table lives. */
    const struct rc_hop_timing *timing;
    uint64_t *hop_tat;
    uint32_t n_chapters;     /* entries in chapters */
    const struct rc_chapter *chapters;  /* NULL: none */
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
 * The limits ride in the table so that a reload swaps them with the chains.
 *
 * Invariants, checked by rc_table_check(): chains is non-NULL when
 * n_chains > 0 [NO_CHAINS]; each chain starts after the last address of
 * the one before it, families 4 then 6 [ORDER]; limited is nonzero exactly
 * when a bucket is on (interval_ns > 0) [LIMITED]. */
struct rc_table {
    uint32_t n_chains;
    const struct rc_chain *chains;
    uint32_t limited;        /* nonzero: the daemon or the source limit is on */
    struct rc_bucket daemon; /* each queue's share of the daemon-wide limit */
    struct rc_bucket source; /* per source address (IPv6: per /64), shared */
};

/* Why rc_table_check() refused a table: the invariant, named in [] above. */
enum rc_fault {
    RC_FAULT_NONE = 0,
    RC_FAULT_NO_CHAINS,
    RC_FAULT_ORDER,
    RC_FAULT_LIMITED,
    RC_FAULT_FAMILY,
    RC_FAULT_PREFIX,
    RC_FAULT_LENGTH,
    RC_FAULT_FLAGS,
    RC_FAULT_END,
    RC_FAULT_N_HOPS,
    RC_FAULT_HOP_NUMBER,
    RC_FAULT_ALTERNATIVES,
    RC_FAULT_REPLY_TTL,
    RC_FAULT_MTU,
    RC_FAULT_EXT_RANGE,
    RC_FAULT_EXT_LENGTH,
    RC_FAULT_EXT_CONTENT,
    RC_FAULT_EXT_SUM,
    RC_FAULT_TIMING,
    RC_FAULT_LOSS,
    RC_FAULT_DESTINATION,
    RC_FAULT_BALANCE,
    RC_FAULT_FURTHER,
    RC_FAULT_REWRITE,
    RC_FAULT_CHAPTERS,
    RC_FAULT_COUNT
};

/* Where the fault lies: the chain (index into table->chains) and the
 * router (index into its hops or timing; 0 when the fault is the chain's). */
struct rc_table_fault {
    uint32_t chain;
    uint32_t router;
};

/* Check every invariant above, once, before a table is published: the
 * reply path relies on them and checks none per packet. Returns
 * RC_FAULT_NONE, or the first fault met and (unless at is NULL) where. */
int rc_table_check(const struct rc_table *table, struct rc_table_fault *at);

/* One line saying what an enum rc_fault breaks. */
const char *rc_table_fault_text(int fault);

/* Who answered a probe and how: the chain (index into table->chains), its
 * router, numbered as rc_chain.timing is: k for hop k itself, and past
 * length the hops' '+' alternatives, hop by hop in the order written; the
 * reply's enum rc_kind, as the core decided it; and the chapter the probe
 * was addressed to (index into the chain's chapters, plus one; 0: none). */
struct rc_where {
    uint32_t chain;
    uint32_t router;
    uint32_t kind;
    uint32_t chapter;
};

/* Build the reply to the packet at buf + headroom (len bytes) in place, in
 * a buffer of cap bytes, from a table rc_table_check() passed. Returns the
 * reply's length and sets *off to where it starts in buf, and *where to
 * who answered and with what; or returns -(enum rc_drop). No system call,
 * no allocation. */
int rc_reply(uint8_t *buf, size_t headroom, size_t len, size_t cap,
             const struct rc_table *table, size_t *off, struct rc_where *where);

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
    uint64_t replies[16];    /* by enum rc_kind */
    uint64_t drops[32];      /* by enum rc_drop */
    uint64_t paced[8];       /* by enum rc_pace */
    uint64_t late[RC_LATE_BUCKETS]; /* delayed replies by how late they went out */
    uint64_t late_ns;        /* the sum of that lateness */
    uint64_t chapters;       /* replies to a probe addressed to a chapter */
    uint64_t write_errors;
    uint64_t read_errors;    /* reads that failed other than EAGAIN / EINTR */
    int32_t last_write_errno;
    int32_t last_read_errno;
};

/* One serving loop: a TUN queue's reader and writer, its buffer, its
 * delay pool and its book (csrc/worker.h has the layout, private to C).
 * The live table is swapped by rc_table_publish(); the worker records the
 * table it holds, so the publisher knows when an old table may be freed. */
struct rc_worker;

/* What a worker is made of. */
struct rc_worker_config {
    int fd;                  /* TUN queue, non-blocking */
    int stop_fd;             /* eventfd: readable means stop */
    const struct rc_table **live;
    size_t cap;              /* bytes of its buffer, RC_HEADROOM included */
    uint32_t n_small;        /* delay pool slots of RC_SLOT_SMALL bytes */
    uint32_t n_large;        /* ... and of RC_SLOT_LARGE bytes */
    uint64_t rng;            /* seed of its random generator */
    uint64_t *source_tat;    /* source_mask + 1 cells, shared by every queue */
    uint32_t source_mask;    /* a power of two, minus one */
    uint64_t source_salt;    /* keys the source hash, the same in every queue */
};

enum rc_pool_sizes {
    RC_SLOT_SMALL = 256,     /* Time Exceeded to a traceroute or mtr probe, with extensions */
    RC_SLOT_LARGE = 1536     /* up to a 1500-byte Echo Reply; quotes stop at 576 / 1280 */
};

/* Bytes of memory a worker of this config is laid out over. */
size_t rc_worker_bytes(const struct rc_worker_config *config);

/* Lay a worker out over mem (rc_worker_bytes() long, any alignment, need
 * not be zeroed: the pool's reply arenas are not touched until used). */
struct rc_worker *rc_worker_init(void *mem, const struct rc_worker_config *config);

/* Serve until stop_fd is readable: returns 0, or -errno if poll fails. */
int rc_serve(struct rc_worker *w);

/* Make table the live one; returns the one it replaced. */
const struct rc_table *rc_table_publish(const struct rc_table **live,
                                        const struct rc_table *table);

/* Nonzero while the worker may still read table. */
int rc_worker_holds(const struct rc_worker *w, const struct rc_table *table);

/* A consistent-enough copy of the worker's counters. */
void rc_worker_read_stats(const struct rc_worker *w, struct rc_stats *out);
