/* placeholder until the reply core lands */
#include <stdint.h>
#include <stddef.h>
#include "routechain.h"
int rc_reply(uint8_t *buf, size_t headroom, size_t len, size_t cap,
             const struct rc_table *table, size_t *off) { return -RC_DROP_NOT_OURS; }
int rc_reply_kind(const uint8_t *reply, size_t len) { return 0; }
