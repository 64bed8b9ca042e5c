/* Leases of fleet budgets: admission against a slice, and the slice's size. Pure. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "daemon/fleet_lease.h"

void
fleet_lease_init(struct fleet_lease *l, const struct budget_claim *cl, int64_t now_ms)
{
	memset(l, 0, sizeof *l);
	snprintf(l->key, sizeof l->key, "%s", cl->key);
	l->period_start_ms = cl->period_start_ms;
	l->limit = cl->limit;
	l->mode = FLEET_LEASE_NONE;
	l->rate_ms = now_ms;
	l->used_ms = now_ms;
}

double
fleet_lease_rate(const struct fleet_lease *l, int64_t now_ms)
{
	int64_t dt = now_ms - l->rate_ms;

	if (dt <= 0)
		return l->rate;
	return l->rate * exp(-(double)dt / FLEET_LEASE_RATE_MS);
}

void
fleet_lease_note(struct fleet_lease *l, int64_t amount, int64_t now_ms)
{
	if (amount <= 0)
		return;
	l->rate = fleet_lease_rate(l, now_ms) + (double)amount * 1000.0 / FLEET_LEASE_RATE_MS;
	if (now_ms > l->rate_ms)
		l->rate_ms = now_ms;
	if (amount > l->biggest)
		l->biggest = amount;
	l->used_ms = now_ms;        /* asked for: not idle */
}

bool
fleet_lease_fits(const struct fleet_lease *l, int64_t amount)
{
	if (amount <= 0)
		return true;
	return l->mode == FLEET_LEASE_LIVE && l->held - l->in_flight >= amount;
}

void
fleet_lease_take(struct fleet_lease *l, int64_t amount, int64_t now_ms)
{
	if (amount > 0)
		l->in_flight += amount;
	l->used_ms = now_ms;
}

void
fleet_lease_settle(struct fleet_lease *l, int64_t worst, int64_t usage)
{
	l->in_flight -= worst > 0 ? worst : 0;
	if (l->in_flight < 0)
		l->in_flight = 0;
	l->held -= usage > 0 ? usage : 0;
	if (l->held < 0)
		l->held = 0;
}

int64_t
fleet_lease_slice(const struct fleet_lease *l, int64_t now_ms)
{
	double s = fleet_lease_rate(l, now_ms) * FLEET_LEASE_SLICE_MS / 1000.0;
	int64_t slice = s >= 4e18 ? INT64_C(4000000000000000000) : (int64_t)ceil(s);

	if (slice < l->biggest)
		slice = l->biggest;
	if (slice < l->waiting)
		slice = l->waiting;
	return slice;
}

int64_t
fleet_lease_fair(const struct fleet_lease *l)
{
	int64_t left;

	if (!l->known)
		return INT64_MAX;
	left = l->limit - l->used - l->reserved;
	if (left <= 0)
		return 0;
	return left / (l->nodes > 1 ? l->nodes : 1);
}

int64_t
fleet_lease_change(const struct fleet_lease *l, int64_t now_ms)
{
	int64_t avail = l->held - l->in_flight, slice, fair, keep, target, grow, free_;

	switch (l->mode) {
	case FLEET_LEASE_CLOSING:
		return 0;
	case FLEET_LEASE_FALLBACK:
		return avail > 0 ? -avail : 0;
	case FLEET_LEASE_NONE:
	case FLEET_LEASE_LIVE:
		break;
	}
	if (avail > 0 && l->waiting == 0 && now_ms - l->used_ms >= FLEET_LEASE_IDLE_MS)
		return -avail;          /* unused: back to the fleet */
	fair = fleet_lease_fair(l);
	if (l->others_want > 0 && fair != INT64_MAX) {
		keep = fair > l->in_flight ? fair : l->in_flight;
		if (l->held > keep && avail > 0)
			return -(l->held - keep < avail ? l->held - keep : avail);
	}
	slice = fleet_lease_slice(l, now_ms);
	if (avail >= slice / 2 && avail >= l->waiting && avail > 0)
		return 0;               /* enough until the next look */
	target = l->in_flight > INT64_MAX - slice ? INT64_MAX : l->in_flight + slice;
	if (target > fair)
		target = fair;
	if (target <= l->held)
		return 0;
	grow = target - l->held;
	if (l->known) {         /* what no lease and no reservation holds */
		free_ = l->limit - l->used - l->reserved - l->leased;
		if (grow > free_)
			grow = free_ > 0 ? free_ : 0;
	}
	return grow;
}

bool
fleet_lease_done(const struct fleet_lease *l, int64_t now_ms)
{
	if (l->in_flight > 0 || l->waiting > 0)
		return false;
	switch (l->mode) {
	case FLEET_LEASE_CLOSING:
	case FLEET_LEASE_FALLBACK:
		return true;
	case FLEET_LEASE_NONE:
	case FLEET_LEASE_LIVE:
		break;
	}
	return now_ms - l->used_ms >= FLEET_LEASE_IDLE_MS;
}

/* Take the database's figures and decide between slices and a reservation per request. */
static void
fleet_lease_decide(struct fleet_lease *l, int64_t now_ms)
{
	int64_t left = l->limit - l->used - l->reserved, slice = fleet_lease_slice(l, now_ms);

	switch (l->mode) {
	case FLEET_LEASE_CLOSING:
		return;
	case FLEET_LEASE_FALLBACK:
		if (left / 2 >= slice && slice > 0)
			l->mode = l->held > 0 ? FLEET_LEASE_LIVE : FLEET_LEASE_NONE;
		return;
	case FLEET_LEASE_NONE:
	case FLEET_LEASE_LIVE:
		break;
	}
	if (left < slice)
		l->mode = FLEET_LEASE_FALLBACK;
	else
		l->mode = l->held > 0 ? FLEET_LEASE_LIVE : FLEET_LEASE_NONE;
}

void
fleet_lease_learn(struct fleet_lease *l, int64_t change, bool expired, int64_t used,
    int64_t reserved, int64_t leased, int64_t nodes, int64_t others_want, int64_t now_ms)
{
	l->held += change;
	if (l->held < 0)
		l->held = 0;
	l->known = true;
	l->used = used;
	l->reserved = reserved;
	l->leased = leased;
	l->nodes = nodes > 1 ? nodes : 1;
	l->others_want = others_want;
	if (expired) {
		l->mode = FLEET_LEASE_CLOSING;
		return;
	}
	fleet_lease_decide(l, now_ms);
	/* what waits still does not fit, and no more was to be had: per request then */
	if ((l->mode == FLEET_LEASE_LIVE || l->mode == FLEET_LEASE_NONE) && l->waiting > 0 &&
	    l->held - l->in_flight < l->waiting && fleet_lease_change(l, now_ms) <= 0)
		l->mode = FLEET_LEASE_FALLBACK;
}

void
fleet_lease_figures(struct fleet_lease *l, int64_t used, int64_t reserved, int64_t leased,
    int64_t nodes, int64_t now_ms)
{
	l->known = true;
	l->used = used;
	l->reserved = reserved;
	l->leased = leased;
	l->nodes = nodes > 1 ? nodes : 1;
	fleet_lease_decide(l, now_ms);
}

const char *
fleet_lease_mode_name(enum fleet_lease_mode m)
{
	static const char *const names[] = { "none", "live", "fallback", "closing" };

	return (unsigned)m < sizeof names / sizeof names[0] ? names[m] : "?";
}
