/* pack.h: packing helpers shared by the wire format and the ledger. */
#ifndef OLLM_PACK_H
#define OLLM_PACK_H

#include <string.h>

#include <msgpack.h>

/* Pack a str header and body; a short one in a single write to the sink. 0 or -1. */
static inline int
pack_str(msgpack_packer *pk, const char *s, size_t len)
{
	char b[32];

	if (len >= sizeof b)
		return msgpack_pack_str(pk, len) != 0 || msgpack_pack_str_body(pk, s, len) != 0 ?
		    -1 : 0;
	b[0] = (char)(0xa0 | len);      /* fixstr */
	memcpy(b + 1, s, len);
	return pk->callback(pk->data, b, len + 1) != 0 ? -1 : 0;
}

#endif
