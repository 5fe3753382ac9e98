// libcurl's setopt/getinfo are variadic, which Swift cannot call: one typed wrapper per
// argument kind, under hcos_ names. Only Sources/Fetch/CurlEasy.swift uses these.
#ifndef HCOS_CURL_SHIM_H
#define HCOS_CURL_SHIM_H
#include <curl/curl.h>

typedef size_t (*hcos_curl_data_callback)(char *data, size_t size, size_t count, void *context);

static inline CURLcode hcos_curl_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode hcos_curl_setopt_off(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode hcos_curl_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode hcos_curl_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode hcos_curl_setopt_callback(CURL *handle, CURLoption option, hcos_curl_data_callback value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode hcos_curl_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLcode hcos_curl_getinfo_string(CURL *handle, CURLINFO info, char **value) {
    return curl_easy_getinfo(handle, info, value);
}
#endif
