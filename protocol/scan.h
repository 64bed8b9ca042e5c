/* scan.c: bounded walk over msgpack bytes before they are unpacked. */
#ifndef OLLM_SCAN_H
#define OLLM_SCAN_H

#include <stddef.h>
#include <stdint.h>

/*
 * Check that p starts with one well-formed msgpack object: every declared
 * str, bin, ext, array and map length fits in the bytes left, containers nest
 * at most max_depth deep (max_depth <= SCAN_MAX_DEPTH), the reserved byte
 * 0xc1 does not occur, and, unless max_objects is 0, it holds at most
 * max_objects objects (each value, map key and container counts one).
 * *used is the object's length and *objects, if not NULL, how many objects it
 * holds. Costs O(len) time and no memory, so it runs before msgpack-c, whose
 * unpacker allocates by declared counts: some 24 bytes per object.
 * Returns 0, SCAN_BAD for malformed bytes, SCAN_TOO_MANY past max_objects.
 */
#define SCAN_MAX_DEPTH 64
#define SCAN_BAD (-1)
#define SCAN_TOO_MANY (-2)
int scan_object(const uint8_t *p, size_t len, unsigned int max_depth,
    size_t max_objects, size_t *used, size_t *objects, char *cause,
    size_t cause_len);

#endif
