/* A queue's book of writes (book.c): how many delayed replies fall due in
 * each slice of the next second, against how many its worker can write in
 * a slice. Written and read by its worker alone. Private to C. Include
 * after routechain.h. */
#ifndef ROUTECHAIN_BOOK_H
#define ROUTECHAIN_BOOK_H

#include <stdbool.h>

enum {
    RC_BOOK_SHIFT = 18,      /* a slice of the book: 2^18 ns, 262 us */
    RC_BOOK_BINS = 4096,     /* 1.07 s ahead; replies due later are not booked */
    RC_BOOK_SHARE = 75,      /* percent of a slice the writes due in it may take */
    RC_BOOK_REACH = 32       /* slices either side a full one's reply may move to */
};

/* Writes booked for one slice of time. */
struct rc_book_bin {
    uint32_t slice;          /* due_ns >> RC_BOOK_SHIFT, truncated: which slice */
    uint32_t writes;         /* replies due within it */
};

struct rc_book {
    struct rc_book_bin *bins;  /* RC_BOOK_BINS slices, the next second or so */
    uint32_t cap;            /* most writes a slice takes; 0: none measured yet */
    uint32_t write_ns16;     /* what one write costs, a moving average, in ns/16 */
};

/* Bytes of memory rc_book_init() lays a book over. */
size_t rc_book_bytes(void);

/* An empty book over mem (rc_book_bytes() long, 4-byte aligned). */
void rc_book_init(struct rc_book *b, void *mem);

/* Book a write for a reply due at due_ns in the slice it falls in or, when
 * that one is booked full, in the nearest slice with room (at most
 * RC_BOOK_REACH away) that still holds a time within [early_ns, late_ns]:
 * the range of delays its hop may draw (early_ns >= now_ns). Returns the
 * time booked, due_ns or that moved to the other slice and kept within the
 * range; 0 when every slice within reach of the range is full. */
uint64_t rc_book_take(struct rc_book *b, uint64_t due_ns, uint64_t early_ns, uint64_t late_ns,
                      uint64_t now_ns);

/* n replies were just written in ns nanoseconds: update the measured cost
 * of a write, and with it how many writes a slice takes. */
void rc_book_note_writes(struct rc_book *b, uint32_t n, uint64_t ns);

#endif
