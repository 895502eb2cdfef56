#include <stdint.h>
#include <stddef.h>
#include "routechain.h"
int rc_serve(struct rc_worker *w) { return 0; }
const struct rc_table *rc_table_publish(const struct rc_table **live, const struct rc_table *table) { const struct rc_table *o = *live; *live = table; return o; }
int rc_worker_holds(const struct rc_worker *w, const struct rc_table *table) { return 0; }
void rc_stats_read(const struct rc_worker *w, struct rc_stats *out) { *out = w->stats; }
