/* Bounded walk over msgpack bytes: lengths, nesting and reserved bytes. */
#include "config.h"

#include <stdio.h>

#include "protocol/scan.h"

/* Read an n-byte big-endian unsigned integer. */
static uint64_t
scan_be(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	while (n-- > 0)
		v = v << 8 | *p++;
	return v;
}

/* Check one msgpack object at the start of p; see scan.h. */
int
scan_object(const uint8_t *p, size_t len, unsigned int max_depth,
    size_t max_objects, size_t *used, size_t *objects, char *cause,
    size_t cause_len)
{
	uint64_t left[SCAN_MAX_DEPTH + 1];	/* objects still due per open level */
	uint64_t pending;			/* sum of left[]: each needs >= 1 byte */
	uint64_t n;
	unsigned int top = 0;
	size_t off = 0, lenlen, skip, count = 0;
	uint8_t b;
	int container;

	if (max_depth > SCAN_MAX_DEPTH)
		max_depth = SCAN_MAX_DEPTH;
	left[0] = 1;
	pending = 1;
	for (;;) {
		while (top > 0 && left[top] == 0)
			top--;
		if (left[top] == 0)
			break;
		if (off >= len) {
			snprintf(cause, cause_len, "msgpack truncated at byte %zu", off);
			return SCAN_BAD;
		}
		if (max_objects != 0 && count == max_objects) {
			snprintf(cause, cause_len,
			    "msgpack holds more than %zu objects (at byte %zu)",
			    max_objects, off);
			return SCAN_TOO_MANY;
		}
		count++;
		left[top]--;
		pending--;
		b = p[off++];
		container = 0;
		lenlen = 0;
		skip = 0;
		n = 0;
		if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
			;			/* fixint, nil, bool */
		else if (b <= 0x8f) {
			container = 2;
			n = b & 0x0f;
		} else if (b <= 0x9f) {
			container = 1;
			n = b & 0x0f;
		} else if (b <= 0xbf)
			n = b & 0x1f;		/* fixstr */
		else {
			switch (b) {
			case 0xc4: case 0xd9: lenlen = 1; break;	/* bin8, str8 */
			case 0xc5: case 0xda: lenlen = 2; break;
			case 0xc6: case 0xdb: lenlen = 4; break;
			case 0xc7: lenlen = 1; skip = 1; break;		/* ext: type byte */
			case 0xc8: lenlen = 2; skip = 1; break;
			case 0xc9: lenlen = 4; skip = 1; break;
			case 0xca: skip = 4; break;			/* float32 */
			case 0xcb: skip = 8; break;
			case 0xcc: case 0xd0: skip = 1; break;		/* ints */
			case 0xcd: case 0xd1: skip = 2; break;
			case 0xce: case 0xd2: skip = 4; break;
			case 0xcf: case 0xd3: skip = 8; break;
			case 0xd4: skip = 2; break;			/* fixext */
			case 0xd5: skip = 3; break;
			case 0xd6: skip = 5; break;
			case 0xd7: skip = 9; break;
			case 0xd8: skip = 17; break;
			case 0xdc: container = 1; lenlen = 2; break;
			case 0xdd: container = 1; lenlen = 4; break;
			case 0xde: container = 2; lenlen = 2; break;
			case 0xdf: container = 2; lenlen = 4; break;
			default:
				snprintf(cause, cause_len,
				    "msgpack byte 0x%02x at %zu is reserved", b, off - 1);
				return SCAN_BAD;
			}
		}
		if (lenlen > 0) {
			if (len - off < lenlen) {
				snprintf(cause, cause_len, "msgpack truncated at byte %zu", off);
				return SCAN_BAD;
			}
			n = scan_be(p + off, lenlen);
			off += lenlen;
		}
		if (container != 0) {
			if (top + 1 > max_depth) {
				snprintf(cause, cause_len,
				    "msgpack nested deeper than %u at byte %zu", max_depth, off);
				return SCAN_BAD;
			}
			n *= container;		/* a map holds 2n objects */
			if (n > len - off || pending + n > len - off) {
				snprintf(cause, cause_len,
				    "msgpack %s at byte %zu declares more entries than bytes left",
				    container == 2 ? "map" : "array", off);
				return SCAN_BAD;
			}
			if (n > 0) {
				left[++top] = n;
				pending += n;
			}
			continue;
		}
		if (skip > len - off || n > len - off - skip) {
			snprintf(cause, cause_len,
			    "msgpack value at byte %zu is longer than the bytes left", off);
			return SCAN_BAD;
		}
		off += skip + n;
	}
	*used = off;
	if (objects != NULL)
		*objects = count;
	return 0;
}
