/*
 * cidr.h - lists of address ranges ("10.0.0.0/8, fd00::/8, 192.0.2.7"), as
 * operators write them in settings: fetch's allow list, the trusted
 * proxies.
 *
 * A list is comma-separated entries, spaces around each ignored; an entry
 * is an IPv4 or IPv6 address with an optional /prefix (none: the address
 * alone). An IPv4 address written as IPv6 (::ffff:a.b.c.d) is matched by
 * the IPv4 entries too: it is that host.
 */
#ifndef UPRES_CORE_CIDR_H
#define UPRES_CORE_CIDR_H

#include <stdint.h>

#include "core/err.h"

/* 1 when the first bits bits of a and b agree. */
int cidr_prefix_match(const uint8_t *a, const uint8_t *b, int bits);

/* 0 when every entry of list parses (NULL and "" are empty lists), else UP_ERR_INVALID naming the entry. */
int cidr_list_check(const char *list, up_error_t *err);

/* 1 when addr (family AF_INET: 4 bytes, AF_INET6: 16) is inside an entry of list; malformed entries match
 * nothing. */
int cidr_list_match(const char *list, int family, const uint8_t *addr);

/* cidr_list_match for an address as text ("192.0.2.1", "2001:db8::1"); 0 when it is not an address. */
int cidr_list_match_text(const char *list, const char *addr);

#endif
