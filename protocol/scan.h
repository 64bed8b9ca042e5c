/* scan.c: bounded walk over msgpack bytes before they are unpacked. */
#ifndef OLLM_SCAN_H
#define OLLM_SCAN_H

#include <stddef.h>
#include <stdint.h>

/*
 * Check that p starts with one well-formed msgpack object: every declared
 * str, bin, ext, array and map length fits in the bytes left, containers nest
 * at most max_depth deep (max_depth <= SCAN_MAX_DEPTH), and the reserved byte
 * 0xc1 does not occur. *used is the object's length. Costs O(len) time and no
 * memory, so it runs before msgpack-c, whose unpacker allocates by declared
 * counts.
 */
#define SCAN_MAX_DEPTH 64
int scan_object(const uint8_t *p, size_t len, unsigned int max_depth,
    size_t *used, char *cause, size_t cause_len);

#endif
