/* The book of writes: how many delayed replies a queue may take for each
 * slice of the next second. No system call, no allocation, no globals. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "routechain.h"
#include "book.h"

/* A worker reads while nothing is due and writes what is due,
 * first. Left alone, under a flood that keeps its queue full, that swings:
 * a run of reads while nothing was due books a run of writes one delay
 * later, which crowds the reads out, which leaves the slice after it
 * empty, and so on, until writes pile up and go out milliseconds late.
 * The book counts the writes due in each slice of the next second and
 * takes at most RC_BOOK_SHARE percent of a slice's time for them, at the
 * measured cost of a write: what is booked is written on time, the rest
 * of the slice is left to reads. A reply drawn into a full slice moves to
 * the nearest one with room that its hop's delay +/- jitter reaches, and
 * is refused (RC_PACE_OVERLOADED) only when there is none, as a busy
 * router drops rather than answer late. Until a write has been measured
 * nothing is refused. */

enum {
    WRITE_NS_MAX = 100000        /* a longer write was preempted: not its cost */
};

size_t rc_book_bytes(void)
{
    return RC_BOOK_BINS * sizeof(struct rc_book_bin);
}

void rc_book_init(struct rc_book *b, void *mem)
{
    b->bins = mem;
    memset(b->bins, 0, rc_book_bytes());
    b->cap = 0;
    b->write_ns16 = 0;
}

/* The bin of slice, its count cleared if it held an older slice. A bin
 * whose slice differs holds one at least RC_BOOK_BINS slices earlier
 * (nothing is booked further ahead than that): it is past. Slices are kept
 * to 32 bits: one untouched for 2^32 slices (13 days) and met again exactly
 * then keeps its old count, which at worst refuses one slice's worth of
 * replies once. */
static struct rc_book_bin *find_bin(struct rc_book *b, uint64_t slice)
{
    struct rc_book_bin *bin = &b->bins[slice & (RC_BOOK_BINS - 1)];

    if (bin->slice != (uint32_t)slice) {
        bin->slice = (uint32_t)slice;
        bin->writes = 0;
    }
    return bin;
}

/* Whether slice has room, and if so, book a write in it. */
static bool book_in(struct rc_book *b, uint64_t slice)
{
    struct rc_book_bin *bin = find_bin(b, slice);

    if (b->cap && bin->writes >= b->cap)
        return false;
    bin->writes++;
    return true;
}

/* Slice lies in the book: from now's slice to RC_BOOK_BINS - 1 after it. */
static bool is_open(uint64_t slice, uint64_t now_slice)
{
    return slice - now_slice < RC_BOOK_BINS;
}

uint64_t rc_book_take(struct rc_book *b, uint64_t due_ns, uint64_t early_ns, uint64_t late_ns,
                      uint64_t now_ns)
{
    const uint64_t drawn = due_ns >> RC_BOOK_SHIFT, now_slice = now_ns >> RC_BOOK_SHIFT;
    const uint64_t first = early_ns >> RC_BOOK_SHIFT, last = late_ns >> RC_BOOK_SHIFT;

    if (!is_open(drawn, now_slice))
        return due_ns;                     /* beyond the book: not counted */
    if (book_in(b, drawn))
        return due_ns;
    /* Full: the nearest slice on either side that the hop's range of
     * delays reaches, later first. A slice fills only under a flood, and
     * moving the odd reply to its neighbour evens out what the draw put
     * unevenly: every slice stays within its share, and the reply still
     * goes out within delay +/- jitter, as its story says. */
    for (uint64_t d = 1; d <= RC_BOOK_REACH; d++) {
        bool later = drawn + d <= last && is_open(drawn + d, now_slice);
        bool sooner = drawn >= first + d && is_open(drawn - d, now_slice);

        if (!later && !sooner)
            break;
        if (later && book_in(b, drawn + d)) {
            uint64_t at = due_ns + (d << RC_BOOK_SHIFT);
            return at < late_ns ? at : late_ns;
        }
        if (sooner && book_in(b, drawn - d)) {
            uint64_t at = due_ns - (d << RC_BOOK_SHIFT);
            return at > early_ns ? at : early_ns;
        }
    }
    return 0;
}

void rc_book_note_writes(struct rc_book *b, uint32_t n, uint64_t ns)
{
    uint64_t each16, cap;

    if (n == 0 || ns / n > WRITE_NS_MAX)
        return;
    each16 = ns * 16 / n;
    /* A moving average over about 16 batches, in 1/16 ns. */
    if (b->write_ns16 == 0)
        b->write_ns16 = (uint32_t)each16;
    else
        b->write_ns16 = (uint32_t)((int64_t)b->write_ns16
                                   + ((int64_t)each16 - (int64_t)b->write_ns16) / 16);
    if (b->write_ns16 == 0)
        b->write_ns16 = 1;
    cap = ((uint64_t)RC_BOOK_SHARE << RC_BOOK_SHIFT) * 16 / 100 / b->write_ns16;
    b->cap = cap < 1 ? 1 : cap > UINT32_MAX ? UINT32_MAX : (uint32_t)cap;
}
