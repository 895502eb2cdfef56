/* The DNS fast path: plain queries answered from answers the slow path
 * (routechain/dnsanswer.py) rendered and published here, in a loop that
 * reads and writes datagrams in batches with the GIL released.
 *
 * A query is plain, and looked up, only if every one of these holds;
 * anything else goes to Python unchanged (RC_DNS_PASS_OTHER):
 *  - a QUERY: QR clear, opcode 0 (NOTIFY, UPDATE... are Python's);
 *  - one question, no answer or authority records, at most one additional;
 *  - the name uncompressed, labels of 1-63 octets without a zero octet,
 *    at most 255 octets (RFC 1035 3.1), class IN;
 *  - a data type: not 0, not OPT, not a meta type (RFC 6895 3.1: 128-255,
 *    which holds AXFR, IXFR, TSIG, TKEY and ANY);
 *  - no EDNS, or an OPT alone, owner root, version 0, no option (a cookie
 *    or padding is Python's).
 * The answer is the one published for the same lower-case name, type and
 * EDNS state (none, DO clear, DO set), with the query's ID, its question's
 * own octets (so 0x20 case comes back as sent), and its RD and CD; over UDP
 * it must fit what the client takes (512 without EDNS, else its payload
 * size within 512..1232), or Python answers it truncated (RFC 2181 9).
 * That is what dnsanswer.Index's own fast path does with the same bytes,
 * which is why an answer published from one query is right for another
 * of the same key: the part after the question never depends on the
 * query's case (names there are pointers into the question, or the zone's).
 *
 * The table has one writer at a time (Python serialises put and clear)
 * and readers in other threads (a UDP loop each): a seqlock. A writer
 * makes seq odd, changes the table, makes it even; a reader copies an
 * answer out and keeps it only if seq was even and the same before and
 * after, else the query goes to Python as a miss. What a reader takes
 * from a slot before that check (offsets, lengths) is bounds-checked, so
 * a torn slot can make a miss but never a read outside the table.
 * A key's hash is salted per start and a lookup probes at most PROBE_MAX
 * slots, so chosen names cannot make a lookup slow. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include "dnsfast.h"

enum {
    HEADER = 12,
    PROBE_MAX = 64,
    NAME_MAX = 255,          /* RFC 1035 3.1 */
    LABEL_MAX = 63,
    TYPE_OPT = 41,
    TYPE_META = 128,         /* RFC 6895 3.1: 128-255 are meta types and QTYPEs */
    CLASS_IN = 1,
    OPT_LEN = 11,            /* root owner, type, class, TTL, RDLENGTH */
    PAYLOAD_MIN = 512,       /* RFC 6891 6.2.5 */
    PAYLOAD_MAX = 1232,      /* dnsanswer.PAYLOAD_MAX */
    TCP_MAX = 65535,
    FLAG_QR = 0x80, FLAG_TC = 0x02, FLAG_RD = 0x01,  /* header byte 2 */
    FLAG_CD = 0x10,                                  /* header byte 3 */
    OPCODE_QR_MASK = 0xF8,   /* QR and opcode in header byte 2 */
    DO_BIT = 0x80,           /* in the OPT TTL's third octet (RFC 3225 3) */
    FORM_PLAIN = 0, FORM_EDNS = 1, FORM_DO = 2,
    VALUE_HEAD = 11          /* outcome, flags (2), counts (8) */
};

static const uint8_t rcode_of[3] = {0, 3, 5};  /* NOERROR, NXDOMAIN, REFUSED */

/* Counters have one writer; relaxed atomics keep readers free of torn values. */
static inline void bump(uint64_t *counter)
{
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

static uint32_t pow2_at_least(uint64_t n)
{
    uint32_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
}

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

/* --- parsing ------------------------------------------------------------ */

struct plain {
    size_t qend;             /* end of the question */
    size_t name_len;         /* the name's wire length, with its root octet */
    unsigned form;           /* FORM_* */
    unsigned payload;        /* the client's UDP payload size (EDNS) */
};

static inline uint8_t lower(uint8_t c)
{
    return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
}

/* true if q is plain (the list above), with where its parts are. */
static bool parse_plain(const uint8_t *q, size_t n, struct plain *p)
{
    if (n < HEADER + 5)
        return false;
    if (q[2] & OPCODE_QR_MASK)
        return false;  /* a response, or not a QUERY */
    if (q[4] || q[5] != 1 || q[6] || q[7] || q[8] || q[9] || q[10] || q[11] > 1)
        return false;
    size_t i = HEADER;
    for (;;) {
        if (i >= n)
            return false;
        uint8_t len = q[i];
        if (len == 0)
            break;
        if (len > LABEL_MAX)
            return false;  /* a pointer or a reserved label type */
        if (i + 1 + len > n)
            return false;
        for (size_t k = i + 1; k <= i + len; k++)
            if (q[k] == 0)
                return false;
        i += 1 + (size_t)len;
    }
    p->name_len = i + 1 - HEADER;
    if (p->name_len > NAME_MAX)
        return false;
    p->qend = i + 5;
    if (p->qend > n)
        return false;
    unsigned type = (unsigned)q[i + 1] << 8 | q[i + 2];
    if (type == 0 || type == TYPE_OPT || (type >= TYPE_META && type <= 255))
        return false;
    if (q[i + 3] || q[i + 4] != CLASS_IN)
        return false;
    const size_t e = p->qend;
    if (q[11] == 0) {
        p->form = FORM_PLAIN;
        p->payload = 0;
        return n == e;
    }
    /* RFC 6891 6.1.2: the OPT, owner root; version 0; no option. */
    if (n != e + OPT_LEN || q[e] || q[e + 1] || q[e + 2] != TYPE_OPT || q[e + 6]
            || q[e + 9] || q[e + 10])
        return false;
    p->payload = (unsigned)q[e + 3] << 8 | q[e + 4];
    p->form = q[e + 7] & DO_BIT ? FORM_DO : FORM_EDNS;
    return true;
}

/* --- the table of answers ---------------------------------------------- */

struct slot {
    uint64_t hash;           /* 0: empty */
    uint32_t at;             /* key, then value, in the arena */
    uint16_t key_len;
    uint16_t value_len;
};

struct rc_dns_table {
    uint64_t seq;            /* odd while a writer changes the table (a seqlock) */
    uint32_t mask;           /* slots - 1 */
    uint32_t count, entries_max;
    uint32_t used, arena_cap;
    uint64_t salt;
    uint64_t resets;
    struct slot *slots;
    uint8_t *arena;
};

/* The key: the lower-case name, the type, the form. */
static size_t make_key(const uint8_t *q, const struct plain *p, uint8_t *key)
{
    for (size_t k = 0; k < p->name_len; k++)
        key[k] = lower(q[HEADER + k]);
    key[p->name_len] = q[HEADER + p->name_len];
    key[p->name_len + 1] = q[HEADER + p->name_len + 1];
    key[p->name_len + 2] = (uint8_t)p->form;
    return p->name_len + 3;
}

static uint64_t hash_key(const uint8_t *key, size_t len, uint64_t salt)
{
    uint64_t h = salt ^ 0xcbf29ce484222325ULL;
    for (size_t k = 0; k < len; k++)
        h = (h ^ key[k]) * 0x100000001b3ULL;
    h = mix(h);
    return h ? h : 1;
}

static void clear(struct rc_dns_table *t);

size_t rc_dns_table_bytes(uint32_t entries, uint32_t arena)
{
    return 63 + round_up(sizeof(struct rc_dns_table), 64)
         + (size_t)pow2_at_least(2ull * entries) * sizeof(struct slot) + arena;
}

struct rc_dns_table *rc_dns_table_init(void *mem, uint32_t entries, uint32_t arena,
                                       uint64_t salt)
{
    uint8_t *at = (uint8_t *)round_up((uintptr_t)mem, 64);
    struct rc_dns_table *t = (struct rc_dns_table *)at;

    memset(t, 0, sizeof *t);
    t->mask = pow2_at_least(2ull * entries) - 1;
    t->entries_max = entries;
    t->arena_cap = arena;
    t->salt = salt;
    t->slots = (struct slot *)(at + round_up(sizeof *t, 64));
    t->arena = (uint8_t *)(t->slots + t->mask + 1);
    clear(t);
    t->resets = 0;
    return t;
}

static void write_begin(struct rc_dns_table *t)
{
    __atomic_store_n(&t->seq, t->seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void write_end(struct rc_dns_table *t)
{
    __atomic_store_n(&t->seq, t->seq + 1, __ATOMIC_RELEASE);
}

static void clear(struct rc_dns_table *t)
{
    memset(t->slots, 0, ((size_t)t->mask + 1) * sizeof *t->slots);
    t->count = 0;
    t->used = 0;
    __atomic_store_n(&t->resets, t->resets + 1, __ATOMIC_RELAXED);
}

void rc_dns_table_clear(struct rc_dns_table *t)
{
    write_begin(t);
    clear(t);
    write_end(t);
}

uint32_t rc_dns_table_count(const struct rc_dns_table *t)
{
    return t->count;
}

uint64_t rc_dns_table_resets(const struct rc_dns_table *t)
{
    return __atomic_load_n(&t->resets, __ATOMIC_RELAXED);
}

/* A slot as read once: a reader checks and uses this copy only, so a
 * writer changing the slot meanwhile cannot move what it checked. */
static struct slot read_slot(const struct slot *s)
{
    return (struct slot){
        .hash = __atomic_load_n(&s->hash, __ATOMIC_RELAXED),
        .at = __atomic_load_n(&s->at, __ATOMIC_RELAXED),
        .key_len = __atomic_load_n(&s->key_len, __ATOMIC_RELAXED),
        .value_len = __atomic_load_n(&s->value_len, __ATOMIC_RELAXED)};
}

/* The slot holding key, or the empty slot where it would go; NULL if
 * PROBE_MAX slots hold other keys. *copy: the slot as read (its hash 0 if
 * empty), with key and value inside the arena. */
static struct slot *find(const struct rc_dns_table *t, const uint8_t *key, size_t len,
                         uint64_t h, struct slot *copy)
{
    for (uint32_t k = 0; k < PROBE_MAX; k++) {
        struct slot *s = &t->slots[(h + k) & t->mask];
        struct slot c = read_slot(s);
        if (c.hash == 0) {
            *copy = c;
            return s;
        }
        if (c.hash == h && c.key_len == len && c.value_len >= VALUE_HEAD
                && (size_t)c.at + c.key_len + c.value_len <= t->arena_cap
                && memcmp(t->arena + c.at, key, len) == 0) {
            *copy = c;
            return s;
        }
    }
    return NULL;
}

int rc_dns_table_put(struct rc_dns_table *t, const uint8_t *query, size_t qlen,
                     const uint8_t *reply, size_t rlen, int outcome)
{
    struct plain p;
    uint8_t key[NAME_MAX + 3];

    if (!parse_plain(query, qlen, &p))
        return -RC_DNS_PUT_NOT_PLAIN;
    if (outcome < RC_DNS_NOERROR || outcome > RC_DNS_REFUSED)
        return -RC_DNS_PUT_NOT_ANSWER;
    /* This query's answer, whole: its ID and question, QR, no TC, the
     * outcome's RCODE, RD and CD as asked. */
    if (rlen < p.qend || memcmp(reply, query, 2) || memcmp(reply + 4, "\0\1", 2)
            || memcmp(reply + HEADER, query + HEADER, p.qend - HEADER)
            || !(reply[2] & FLAG_QR) || reply[2] & FLAG_TC
            || (reply[3] & 0x0F) != rcode_of[outcome]
            || (reply[2] & FLAG_RD) != (query[2] & FLAG_RD)
            || (reply[3] & FLAG_CD) != (query[3] & FLAG_CD))
        return -RC_DNS_PUT_NOT_ANSWER;
    size_t rest = rlen - p.qend;
    if (rest + VALUE_HEAD > RC_DNS_ANSWER_MAX)
        return -RC_DNS_PUT_TOO_BIG;
    size_t klen = make_key(query, &p, key);
    size_t need = klen + VALUE_HEAD + rest;
    if (need > t->arena_cap)
        return -RC_DNS_PUT_TOO_BIG;
    write_begin(t);
    if (t->count >= t->entries_max || t->used + need > t->arena_cap)
        clear(t);
    uint64_t h = hash_key(key, klen, t->salt);
    struct slot old;
    struct slot *s = find(t, key, klen, h, &old);
    if (s == NULL) {
        write_end(t);
        return -RC_DNS_PUT_CROWDED;
    }
    uint8_t *at = t->arena + t->used;
    memcpy(at, key, klen);
    at[klen] = (uint8_t)outcome;
    at[klen + 1] = reply[2] & (uint8_t)~FLAG_RD;
    at[klen + 2] = reply[3] & (uint8_t)~FLAG_CD;
    memcpy(at + klen + 3, reply + 4, 8);
    memcpy(at + klen + VALUE_HEAD, reply + p.qend, rest);
    if (old.hash == 0)
        t->count++;
    __atomic_store_n(&s->at, t->used, __ATOMIC_RELAXED);
    __atomic_store_n(&s->key_len, (uint16_t)klen, __ATOMIC_RELAXED);
    __atomic_store_n(&s->value_len, (uint16_t)(VALUE_HEAD + rest), __ATOMIC_RELAXED);
    __atomic_store_n(&s->hash, h, __ATOMIC_RELAXED);
    t->used += (uint32_t)need;
    write_end(t);
    return RC_DNS_PUT_OK;
}

/* The client's size limit: RFC 6891 6.2.3-6.2.5, capped at ours. */
static size_t limit_of(const struct plain *p, int udp)
{
    if (!udp)
        return TCP_MAX;
    if (p->form == FORM_PLAIN)
        return PAYLOAD_MIN;
    size_t size = p->payload < PAYLOAD_MIN ? PAYLOAD_MIN : p->payload;
    return size > PAYLOAD_MAX ? PAYLOAD_MAX : size;
}

/* The answer to a plain query p from the table (see rc_dns_answer), read
 * under the seqlock. */
static size_t answer_plain(const struct rc_dns_table *t, const uint8_t *q, const struct plain *p,
                           int udp, uint8_t *out, size_t cap, int *kind)
{
    uint8_t key[NAME_MAX + 3];
    size_t klen = make_key(q, p, key);
    uint64_t h = hash_key(key, klen, t->salt);
    uint64_t seq = __atomic_load_n(&t->seq, __ATOMIC_ACQUIRE);

    *kind = RC_DNS_PASS_MISS;
    if (seq & 1)
        return 0;  /* a writer is at work: Python answers this one */
    struct slot c;
    if (find(t, key, klen, h, &c) == NULL || c.hash == 0)
        return 0;
    const uint8_t *v = t->arena + c.at + c.key_len;  /* inside the arena: find() */
    size_t rest = c.value_len - VALUE_HEAD;
    size_t len = p->qend + rest;
    if (len > limit_of(p, udp) || len > cap) {
        *kind = RC_DNS_PASS_BIG;
        return 0;
    }
    uint8_t outcome = v[0];
    memcpy(out, q, 2);
    out[2] = v[1] | (q[2] & FLAG_RD);
    out[3] = v[2] | (q[3] & FLAG_CD);
    memcpy(out + 4, v + 3, 8);
    memcpy(out + HEADER, q + HEADER, p->qend - HEADER);
    memcpy(out + p->qend, v + VALUE_HEAD, rest);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&t->seq, __ATOMIC_RELAXED) != seq || outcome > RC_DNS_REFUSED) {
        *kind = RC_DNS_PASS_MISS;
        return 0;  /* changed while copied: what was copied may be torn */
    }
    *kind = outcome;
    return len;
}

size_t rc_dns_answer(const struct rc_dns_table *t, const uint8_t *query, size_t qlen,
                     int udp, uint8_t *out, size_t cap, int *kind)
{
    struct plain p;

    if (!parse_plain(query, qlen, &p)) {
        *kind = RC_DNS_PASS_OTHER;
        return 0;
    }
    return answer_plain(t, query, &p, udp, out, cap, kind);
}

size_t rc_dns_tcp_answer(const struct rc_dns_table *t, const uint8_t *in, size_t len,
                         size_t *used, uint8_t *out, size_t cap, uint64_t *counts)
{
    size_t at = 0, written = 0;

    while (len - at >= 2) {
        size_t size = (size_t)in[at] << 8 | in[at + 1];
        if (size > len - at - 2 || cap - written < 2)
            break;
        int kind;
        size_t n = rc_dns_answer(t, in + at + 2, size, 0, out + written + 2,
                                 cap - written - 2, &kind);
        if (n == 0)
            break;
        out[written] = (uint8_t)(n >> 8);
        out[written + 1] = (uint8_t)n;
        written += 2 + n;
        at += 2 + size;
        counts[kind]++;
    }
    *used = at;
    return written;
}

/* The "slip" answer of RRL, made of a composed answer in place (as
 * dnsanswer.truncated() makes it): header with TC, the question, the OPT
 * when the query had one; never longer than the query. */
static size_t slip_answer(uint8_t *out, const struct plain *p)
{
    static const uint8_t opt[OPT_LEN] = {0, 0, TYPE_OPT, PAYLOAD_MAX >> 8, PAYLOAD_MAX & 0xFF};

    out[2] |= FLAG_TC;
    memcpy(out + 4, "\0\1\0\0\0\0\0", 7);
    out[11] = p->form != FORM_PLAIN;
    if (p->form == FORM_PLAIN)
        return p->qend;
    memcpy(out + p->qend, opt, OPT_LEN);
    out[p->qend + 7] = p->form == FORM_DO ? DO_BIT : 0;
    return p->qend + OPT_LEN;
}

/* --- response rate limiting (rrl.py) ------------------------------------ */

struct bucket {
    uint64_t key;            /* 0: empty; rc_dns_client_key() | ERROR_KEY */
    double tokens, last;
    uint64_t limited;
};

enum {
    SEND = 0, DROP = 1, SLIP = 2
};

static const uint64_t ERROR_KEY = 1ull << 63;
static const uint64_t FAMILY_SHIFT = 56;
static const uint64_t SHARED_KEY = 8ull << 56;   /* rrl._SHARED: many prefixes as one */
static const double SWEEP_INTERVAL = 1.0;

struct rc_dns_rrl {
    uint32_t lock;           /* a spinlock: Python's thread and the UDP loops check */
    uint32_t active;         /* rate or errors > 0: read without the lock */
    uint32_t mask, count, table_max, slip;
    double rate, errors, next_sweep;
    uint64_t salt;
    struct bucket *slots;
    struct bucket *scratch;  /* table_max + 2: the survivors of a sweep */
};

size_t rc_dns_rrl_bytes(uint32_t table_max)
{
    return 63 + round_up(sizeof(struct rc_dns_rrl), 64)
         + ((size_t)pow2_at_least(2ull * table_max + 4) + table_max + 2) * sizeof(struct bucket);
}

static void lock(struct rc_dns_rrl *r)
{
    while (__atomic_exchange_n(&r->lock, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&r->lock, __ATOMIC_RELAXED))
            __builtin_ia32_pause();
}

static void unlock(struct rc_dns_rrl *r)
{
    __atomic_store_n(&r->lock, 0, __ATOMIC_RELEASE);
}

static void configure(struct rc_dns_rrl *r, double rate, double errors, uint32_t slip)
{
    r->rate = rate;
    r->errors = errors;
    r->slip = slip;
    r->count = 0;
    r->next_sweep = 0;
    memset(r->slots, 0, ((size_t)r->mask + 1) * sizeof *r->slots);
    __atomic_store_n(&r->active, rate > 0 || errors > 0, __ATOMIC_RELAXED);
}

struct rc_dns_rrl *rc_dns_rrl_init(void *mem, uint32_t table_max, double rate, double errors,
                                   uint32_t slip, uint64_t salt)
{
    uint8_t *at = (uint8_t *)round_up((uintptr_t)mem, 64);
    struct rc_dns_rrl *r = (struct rc_dns_rrl *)at;
    uint32_t slots = pow2_at_least(2ull * table_max + 4);

    memset(r, 0, sizeof *r);
    r->mask = slots - 1;
    r->table_max = table_max;
    r->salt = salt;
    r->slots = (struct bucket *)(at + round_up(sizeof *r, 64));
    r->scratch = r->slots + slots;
    configure(r, rate, errors, slip);
    return r;
}

void rc_dns_rrl_configure(struct rc_dns_rrl *r, double rate, double errors, uint32_t slip)
{
    lock(r);
    configure(r, rate, errors, slip);
    unlock(r);
}

uint32_t rc_dns_rrl_count(const struct rc_dns_rrl *r)
{
    return __atomic_load_n(&r->count, __ATOMIC_RELAXED);
}

uint64_t rc_dns_client_key(const uint8_t *addr, size_t len)
{
    uint64_t key = 0;
    size_t take = len == 16 ? 7 : 3;  /* /56, /24 */

    for (size_t k = 0; k < take && k < len; k++)
        key = key << 8 | addr[k];
    return key | (uint64_t)(len == 16 ? 6 : 4) << FAMILY_SHIFT;
}

/* Linear probing; the table is at most half full, so there is a hole. */
static struct bucket *bucket_slot(const struct rc_dns_rrl *r, uint64_t key)
{
    for (uint64_t h = mix(key ^ r->salt);; h++) {
        struct bucket *b = &r->slots[h & r->mask];
        if (b->key == key || b->key == 0)
            return b;
    }
}

static double rate_of(const struct rc_dns_rrl *r, uint64_t key)
{
    return key & ERROR_KEY ? r->errors : r->rate;
}

/* Forget buckets full again (rrl.RateLimiter._sweep): true if room was made. */
static bool sweep(struct rc_dns_rrl *r, double now)
{
    if (now < r->next_sweep)
        return false;
    r->next_sweep = now + SWEEP_INTERVAL;
    uint32_t kept = 0;
    for (uint32_t k = 0; k <= r->mask; k++) {
        struct bucket *b = &r->slots[k];
        if (b->key == 0)
            continue;
        double rate = rate_of(r, b->key);
        if (b->tokens + (now - b->last) * rate < rate)
            r->scratch[kept++] = *b;
        b->key = 0;
    }
    r->count = 0;
    for (uint32_t k = 0; k < kept; k++) {
        *bucket_slot(r, r->scratch[k].key) = r->scratch[k];
        r->count++;
    }
    return r->count < r->table_max;
}

static int check(struct rc_dns_rrl *r, uint64_t client, int error, double now)
{
    double rate = error ? r->errors : r->rate;
    if (rate <= 0)
        return SEND;
    uint64_t key = client | (error ? ERROR_KEY : 0);
    struct bucket *b = bucket_slot(r, key);
    if (b->key == 0) {
        if (r->count >= r->table_max) {
            if (!sweep(r, now))
                key = SHARED_KEY | (error ? ERROR_KEY : 0);
            b = bucket_slot(r, key);  /* the sweep moved the buckets */
        }
        if (b->key == 0) {
            *b = (struct bucket){.key = key, .tokens = rate, .last = now};
            __atomic_store_n(&r->count, r->count + 1, __ATOMIC_RELAXED);
        }
    }
    double tokens = b->tokens + (now - b->last) * rate;
    if (tokens > rate)
        tokens = rate;
    b->last = now;
    if (tokens >= 1.0) {
        b->tokens = tokens - 1.0;
        return SEND;
    }
    b->tokens = tokens;
    b->limited++;
    return r->slip && b->limited % r->slip == 0 ? SLIP : DROP;
}

int rc_dns_rrl_check(struct rc_dns_rrl *r, uint64_t client, int error, double now)
{
    lock(r);
    int verdict = check(r, client, error, now);
    unlock(r);
    return verdict;
}

/* --- the UDP loop ------------------------------------------------------- */

/* A datagram left for Python, with where it came from: a record in the
 * kept ring, its data after it, the next record at the next multiple of 8
 * (a record that would not fit before the ring's end starts at 0, after
 * a WRAP mark). */
struct kept {
    uint32_t len;            /* WRAP: the rest of the ring is unused */
    uint32_t name_len;
    struct sockaddr_in6 from;
    uint32_t unused;         /* to a multiple of 8 */
};

static const uint32_t WRAP = UINT32_MAX;

struct rc_dns_udp {
    int fd, stop_fd, wake_fd;
    const struct rc_dns_table *table;
    struct rc_dns_rrl *rrl;
    uint64_t head;           /* bytes of the ring the loop has filled (its own) */
    uint64_t tail;           /* bytes of it Python has read (Python's) */
    struct rc_dns_stats stats;
    struct mmsghdr in[RC_DNS_BATCH], out[RC_DNS_BATCH];
    struct iovec in_iov[RC_DNS_BATCH], out_iov[RC_DNS_BATCH];
    struct sockaddr_in6 from[RC_DNS_BATCH];
    uint8_t reply[RC_DNS_BATCH][RC_DNS_REPLY_MAX];
    uint8_t query[RC_DNS_BATCH][RC_DNS_QUERY_MAX];
    _Alignas(8) uint8_t ring[RC_DNS_KEPT_BYTES];  /* last: pages untouched until used */
};

_Static_assert(RC_DNS_KEPT_BYTES % 8 == 0 && sizeof(struct kept) % 8 == 0,
               "kept records stay 8-aligned");
_Static_assert(RC_DNS_KEPT_BYTES > 2 * (sizeof(struct kept) + RC_DNS_QUERY_MAX),
               "the kept ring holds the largest datagram");

static size_t record_bytes(size_t len)
{
    return round_up(sizeof(struct kept) + len, 8);
}

size_t rc_dns_udp_bytes(void)
{
    return 63 + sizeof(struct rc_dns_udp);
}

struct rc_dns_udp *rc_dns_udp_init(void *mem, const struct rc_dns_udp_config *c)
{
    struct rc_dns_udp *u = (struct rc_dns_udp *)round_up((uintptr_t)mem, 64);

    memset(u, 0, offsetof(struct rc_dns_udp, reply));
    u->fd = c->fd;
    u->stop_fd = c->stop_fd;
    u->wake_fd = c->wake_fd;
    u->table = c->table;
    u->rrl = c->rrl;
    for (int i = 0; i < RC_DNS_BATCH; i++) {
        u->in_iov[i] = (struct iovec){u->query[i], RC_DNS_QUERY_MAX};
        u->in[i].msg_hdr.msg_iov = &u->in_iov[i];
        u->in[i].msg_hdr.msg_iovlen = 1;
        u->in[i].msg_hdr.msg_name = &u->from[i];
    }
    return u;
}

static uint64_t client_of(const struct sockaddr_in6 *from)
{
    if (from->sin6_family == AF_INET)
        return rc_dns_client_key((const uint8_t *)&((const struct sockaddr_in *)from)->sin_addr, 4);
    return rc_dns_client_key(from->sin6_addr.s6_addr, 16);
}

static double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);  /* Python's time.monotonic() */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Send the batch's replies; one the kernel refuses is counted and skipped. */
static void send_all(struct rc_dns_udp *u, unsigned n)
{
    unsigned done = 0;

    while (done < n) {
        int sent = sendmmsg(u->fd, u->out + done, n - done, MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            bump(&u->stats.kinds[RC_DNS_SEND_ERROR]);
            done++;
            continue;
        }
        for (int k = 0; k < sent; k++)
            bump(&u->stats.sent);
        done += (unsigned)sent;
    }
}

/* Leave datagram i for Python: false if the kept ring has no room. */
static bool keep(struct rc_dns_udp *u, int i)
{
    uint64_t head = u->head;
    uint64_t used = head - __atomic_load_n(&u->tail, __ATOMIC_ACQUIRE);
    size_t at = head % RC_DNS_KEPT_BYTES, len = u->in[i].msg_len;
    size_t need = record_bytes(len), skip = 0;

    if (at + need > RC_DNS_KEPT_BYTES)
        skip = RC_DNS_KEPT_BYTES - at;  /* to the ring's start, after a WRAP mark */
    if (used + skip + need > RC_DNS_KEPT_BYTES)
        return false;
    if (skip) {
        ((struct kept *)(u->ring + at))->len = WRAP;
        at = 0;
    }
    struct kept *k = (struct kept *)(u->ring + at);
    k->len = (uint32_t)len;
    k->name_len = u->in[i].msg_hdr.msg_namelen;
    memcpy(&k->from, &u->from[i], sizeof k->from);
    memcpy(u->ring + at + sizeof *k, u->query[i], len);
    __atomic_store_n(&u->head, head + skip + need, __ATOMIC_RELEASE);
    return true;
}

/* Wait until the socket is readable (1) or stop is asked (0). */
static int wait_readable(const struct rc_dns_udp *u)
{
    struct pollfd fds[2] = {{.fd = u->fd, .events = POLLIN}, {.fd = u->stop_fd, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (fds[1].revents)
            return 0;
        if (fds[0].revents & POLLNVAL)
            return -EBADF;  /* the socket closed under the loop: never spin */
        return 1;
    }
}

/* One batch: read, answer what the table answers, keep the rest. Returns
 * datagrams read, 0 if none, -errno. */
static int serve_batch(struct rc_dns_udp *u, bool *woke)
{
    for (int i = 0; i < RC_DNS_BATCH; i++) {
        u->in[i].msg_hdr.msg_namelen = sizeof u->from[i];
        u->in[i].msg_hdr.msg_flags = 0;
    }
    /* A blocking socket with a receive timeout: one call waits for the
     * first datagram and takes what else is there (no poll, no read that
     * finds nothing); the timeout lets the loop see stop_fd. */
    int n = recvmmsg(u->fd, u->in, RC_DNS_BATCH, MSG_WAITFORONE, NULL);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    const struct rc_dns_table *t = u->table;
    struct rc_dns_rrl *rrl = u->rrl != NULL && __atomic_load_n(&u->rrl->active, __ATOMIC_RELAXED)
                           ? u->rrl : NULL;
    unsigned n_out = 0;
    double now = -1;
    for (int i = 0; i < n; i++) {
        bump(&u->stats.received);
        const uint8_t *q = u->query[i];
        size_t qlen = u->in[i].msg_len;
        struct plain p;
        int kind = RC_DNS_PASS_OTHER;
        size_t len = 0;
        uint8_t *out = u->reply[n_out];
        if (parse_plain(q, qlen, &p))
            len = answer_plain(t, q, &p, 1, out, RC_DNS_REPLY_MAX, &kind);
        if (len == 0) {
            if (keep(u, i)) {
                bump(&u->stats.kinds[kind]);
                *woke = true;
            } else {
                bump(&u->stats.kinds[RC_DNS_PASS_DROPPED]);
            }
            continue;
        }
        if (rrl != NULL) {
            if (now < 0)
                now = now_seconds();
            int verdict = rc_dns_rrl_check(rrl, client_of(&u->from[i]),
                                           kind == RC_DNS_REFUSED, now);
            if (verdict == DROP) {
                bump(&u->stats.kinds[RC_DNS_RATE_DROP]);
                continue;
            }
            if (verdict == SLIP) {
                len = slip_answer(out, &p);
                bump(&u->stats.kinds[RC_DNS_RATE_SLIP]);
            }
        }
        bump(&u->stats.kinds[kind]);
        u->out_iov[n_out] = (struct iovec){out, len};
        u->out[n_out].msg_hdr = (struct msghdr){
            .msg_name = &u->from[i], .msg_namelen = u->in[i].msg_hdr.msg_namelen,
            .msg_iov = &u->out_iov[n_out], .msg_iovlen = 1};
        n_out++;
    }
    if (n_out)
        send_all(u, n_out);
    return n;
}

static bool stop_asked(const struct rc_dns_udp *u)
{
    struct pollfd fd = {.fd = u->stop_fd, .events = POLLIN};
    return poll(&fd, 1, 0) != 0;  /* readable, or poll failed: stop either way */
}

int rc_dns_udp_serve(struct rc_dns_udp *u)
{
    for (;;) {
        bool woke = false;
        int n = serve_batch(u, &woke);
        if (woke) {
            uint64_t one = 1;
            if (write(u->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
                return -errno;
        }
        if (n > 0)
            continue;
        if (n == -EAGAIN || n == -EINTR) {
            if (stop_asked(u))  /* between batches of a busy socket: at each timeout */
                return 0;
            continue;
        }
        /* Another error: counted; wait rather than spin on it. */
        bump(&u->stats.read_errors);
        int r = wait_readable(u);
        if (r <= 0)
            return r;
    }
}

/* The first kept record, past a WRAP mark; NULL if none. */
static const struct kept *first_kept(struct rc_dns_udp *u)
{
    uint64_t head = __atomic_load_n(&u->head, __ATOMIC_ACQUIRE);
    if (u->tail == head)
        return NULL;
    const struct kept *k = (const struct kept *)(u->ring + u->tail % RC_DNS_KEPT_BYTES);
    if (k->len == WRAP) {
        __atomic_store_n(&u->tail, u->tail + RC_DNS_KEPT_BYTES - u->tail % RC_DNS_KEPT_BYTES,
                         __ATOMIC_RELEASE);
        k = (const struct kept *)u->ring;
    }
    return k;
}

const uint8_t *rc_dns_udp_first(struct rc_dns_udp *u, size_t *len, uint64_t *client)
{
    const struct kept *k = first_kept(u);
    if (k == NULL)
        return NULL;
    *len = k->len;
    *client = client_of(&k->from);
    return (const uint8_t *)(k + 1);
}

int rc_dns_udp_reply(struct rc_dns_udp *u, const uint8_t *reply, size_t len)
{
    const struct kept *k = first_kept(u);
    if (k == NULL)
        return -EINVAL;
    if (sendto(u->fd, reply, len, MSG_DONTWAIT, (const struct sockaddr *)&k->from,
               k->name_len) < 0)
        return -errno;
    return 0;
}

void rc_dns_udp_pop(struct rc_dns_udp *u)
{
    const struct kept *k = first_kept(u);  /* at tail, past any WRAP mark */
    if (k != NULL)
        __atomic_store_n(&u->tail, u->tail + record_bytes(k->len), __ATOMIC_RELEASE);
}

void rc_dns_udp_read_stats(const struct rc_dns_udp *u, struct rc_dns_stats *out)
{
    out->received = __atomic_load_n(&u->stats.received, __ATOMIC_RELAXED);
    out->sent = __atomic_load_n(&u->stats.sent, __ATOMIC_RELAXED);
    out->read_errors = __atomic_load_n(&u->stats.read_errors, __ATOMIC_RELAXED);
    for (size_t k = 0; k < sizeof out->kinds / sizeof out->kinds[0]; k++)
        out->kinds[k] = __atomic_load_n(&u->stats.kinds[k], __ATOMIC_RELAXED);
}
