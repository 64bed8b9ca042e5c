/* parse.c: option values of ollmctl: numbers and dates. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/ollmctl.h"

/* A decimal integer within [min, max]; -1 otherwise. */
int
parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
	char *end;
	long long v;

	if (s == NULL || *s == '\0')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* A finite decimal number within [min, max]; -1 otherwise. */
int
parse_double(const char *s, double min, double max, double *out)
{
	char *end;
	double v;

	if (s == NULL || *s == '\0')
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || *end != '\0' || !isfinite(v) || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Epoch seconds of a UTC calendar time; -1 when it is not a real date. */
static int
parse_utc(int y, int mo, int d, int h, int mi, int sec, int64_t *out)
{
	struct tm tm, chk;
	time_t t;

	if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 ||
	    h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 60)
		return -1;
	memset(&tm, 0, sizeof tm);
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	if (t == (time_t)-1 || gmtime_r(&t, &chk) == NULL || chk.tm_mday != d ||
	    chk.tm_mon != mo - 1)
		return -1;
	*out = (int64_t)t;
	return 0;
}

/* Whether s has the shape: # a digit, _ a space or T, anything else itself. */
static int
parse_shape(const char *s, const char *shape)
{
	for (; *shape != '\0'; s++, shape++) {
		if (*shape == '#' ? (*s < '0' || *s > '9') :
		    *shape == '_' ? (*s != ' ' && *s != 'T') : *s != *shape)
			return 0;
	}
	return *s == '\0';
}

/* Whether s starts with the shape (see parse_shape). */
static int
parse_shape_prefix(const char *s, const char *shape)
{
	for (; *shape != '\0'; s++, shape++) {
		if (*shape == '#' ? (*s < '0' || *s > '9') :
		    *shape == '_' ? (*s != ' ' && *s != 'T') : *s != *shape)
			return 0;
	}
	return 1;
}

/*
 * An ISO 8601 instant: YYYY-MM-DD[T ]HH:MM[:SS[.frac]] followed by nothing
 * (UTC), Z, or an offset +HH:MM, +HHMM or +HH (or -).
 */
static int
parse_instant(const char *s, int64_t *out)
{
	const char *p = s + 16;
	int sec = 0, off = 0, sign;
	int64_t t;

	if (p[0] == ':') {
		if (!parse_shape_prefix(p, ":##"))
			return -1;
		sec = atoi(p + 1);
		p += 3;
		if (*p == '.' || *p == ',') {
			p++;
			if (*p < '0' || *p > '9')
				return -1;
			while (*p >= '0' && *p <= '9')
				p++;        /* fractions of a second are dropped */
		}
	}
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-') {
		sign = *p == '-' ? -1 : 1;
		p++;
		if (parse_shape(p, "##:##"))
			off = atoi(p) * 60 + atoi(p + 3);
		else if (parse_shape(p, "####"))
			off = (p[0] - '0') * 600 + (p[1] - '0') * 60 + atoi(p + 2);
		else if (parse_shape(p, "##"))
			off = atoi(p) * 60;
		else
			return -1;
		if (off > 18 * 60 || (strlen(p) >= 4 && atoi(p + strlen(p) - 2) > 59))
			return -1;
		off *= sign;
		p += strlen(p);
	}
	if (*p != '\0')
		return -1;
	if (parse_utc(atoi(s), atoi(s + 5), atoi(s + 8), atoi(s + 11), atoi(s + 14), sec,
	    &t) != 0)
		return -1;
	t -= (int64_t)off * 60;
	if (t < 0)
		return -1;
	*out = t;
	return 0;
}

/*
 * A --since value: YYYY-MM-DD (UTC), HH:MM[:SS] (today, UTC), an ISO 8601
 * instant YYYY-MM-DDTHH:MM[:SS[.frac]] with Z or an offset (UTC without),
 * @EPOCH, today, yesterday, or N followed by s, m, h, d or w for that long
 * before now. A time after now is not refused here (see cmd_stats).
 */
int
parse_since(const char *s, time_t now, int64_t *out)
{
	int64_t v, unit;
	char *end;
	size_t len;

	if (s == NULL || *s == '\0')
		return -1;
	if (strcmp(s, "today") == 0 || strcmp(s, "yesterday") == 0) {
		v = (int64_t)now - (int64_t)now % 86400;
		*out = s[0] == 't' ? v : v - 86400;
		return 0;
	}
	if (s[0] == '@')
		return parse_int(s + 1, 0, INT64_MAX / 2, out);

	len = strlen(s);
	if (len >= 2 && s[0] >= '0' && s[0] <= '9' && strchr("smhdw", s[len - 1]) != NULL) {
		errno = 0;
		v = strtoll(s, &end, 10);
		if (errno == 0 && end == s + len - 1 && v >= 0) {
			switch (s[len - 1]) {
			case 's': unit = 1; break;
			case 'm': unit = 60; break;
			case 'h': unit = 3600; break;
			case 'd': unit = 86400; break;
			default: unit = 7 * 86400; break;
			}
			if (v > (int64_t)now / unit)
				return -1;
			*out = (int64_t)now - v * unit;
			return 0;
		}
	}

	/* Exact shapes only: no signs or blanks inside the numbers. */
	if (parse_shape(s, "####-##-##"))
		return parse_utc(atoi(s), atoi(s + 5), atoi(s + 8), 0, 0, 0, out);
	if (parse_shape(s, "##:##") || parse_shape(s, "##:##:##")) {
		/* A time of today (UTC). */
		struct tm tm;
		time_t t = now;

		if (gmtime_r(&t, &tm) == NULL)
			return -1;
		return parse_utc(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, atoi(s),
		    atoi(s + 3), s[5] == ':' ? atoi(s + 6) : 0, out);
	}
	if (len >= 16 && parse_shape_prefix(s, "####-##-##_##:##"))
		return parse_instant(s, out);
	return -1;
}
