/* SPDX-License-Identifier: MIT */
/* Typed access to members of untrusted JSON objects. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "gw-proto.h"

/* The member, or NULL when absent or null; -EINVAL in *r when obj is not an object. */
static const cJSON *member(const cJSON *obj, const char *key, int *r)
{
	const cJSON *item;

	*r = 0;
	if (!obj || !key || !cJSON_IsObject(obj)) {
		*r = -EINVAL;
		return NULL;
	}
	item = cJSON_GetObjectItemCaseSensitive(obj, key);
	if (!item || cJSON_IsNull(item)) {
		*r = -ENOENT;
		return NULL;
	}
	return item;
}

/* The string value of member key: 0 with *ret, -ENOENT (absent or null), -EINVAL (not a
 * string). */
static int string_member(const cJSON *obj, const char *key, const char **ret)
{
	const cJSON *item;
	int r;

	item = member(obj, key, &r);
	if (!item)
		return r;
	if (!cJSON_IsString(item) || !item->valuestring)
		return -EINVAL;
	*ret = item->valuestring;
	return 0;
}

int gw_json_get_string(const cJSON *obj, const char *key, size_t max_len, const char **ret)
{
	const char *s = NULL;
	int r = string_member(obj, key, &s);

	if (r < 0)
		return r;
	if (strnlen(s, max_len) >= max_len)
		return -EINVAL;
	*ret = s;
	return 0;
}

int gw_json_get_u64(const cJSON *obj, const char *key, uint64_t min, uint64_t max, uint64_t *ret)
{
	const cJSON *item;
	uint64_t u;
	double v;
	int r;

	item = member(obj, key, &r);
	if (!item)
		return r;
	if (!cJSON_IsNumber(item))
		return -EINVAL;
	v = item->valuedouble;
	if (!isfinite(v) || v < 0 || v > 9007199254740992.0)
		return -EINVAL;
	u = (uint64_t)v;
	if ((double)u != v) /* not an integer */
		return -EINVAL;
	if (u < min || u > max)
		return -EINVAL;
	*ret = u;
	return 0;
}

int gw_json_get_bool(const cJSON *obj, const char *key, int *ret)
{
	const cJSON *item;
	int r;

	item = member(obj, key, &r);
	if (!item)
		return r;
	if (!cJSON_IsBool(item))
		return -EINVAL;
	*ret = cJSON_IsTrue(item) ? 1 : 0;
	return 0;
}

int gw_json_get_string_array(const cJSON *obj, const char *key, size_t max_items,
			     const cJSON **ret_array)
{
	const cJSON *item, *el;
	size_t n = 0;
	int r;

	item = member(obj, key, &r);
	if (!item)
		return r;
	if (!cJSON_IsArray(item))
		return -EINVAL;
	for (el = item->child; el; el = el->next) {
		if (++n > max_items)
			return -EINVAL;
		if (!cJSON_IsString(el) || !el->valuestring ||
		    strnlen(el->valuestring, GW_STRING_MAX) >= GW_STRING_MAX)
			return -EINVAL;
	}
	*ret_array = item;
	return 0;
}

int gw_json_get_hex_u64(const cJSON *obj, const char *key, uint64_t *ret)
{
	const char *s = NULL;
	uint64_t v = 0;
	size_t n;
	int r = string_member(obj, key, &s);

	if (r < 0)
		return r;
	if (s[0] != '0' || s[1] != 'x')
		return -EINVAL;
	s += 2;
	n = strnlen(s, 17);
	if (n == 0 || n > 16)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return -EINVAL;
		v = v << 4 | d;
	}
	*ret = v;
	return 0;
}
