/*
 * libFuzzer target: fuzz_conn.c with a TLS client connection (FUZZ_TLS): a real handshake, then
 * the script, the client's bytes inside records. Seeds: tests/fuzz/corpus/fuzz_conn_tls, the same
 * scripts as fuzz_conn's (tests/fuzz/make_corpus.py).
 *
 * fuzz-links: proxy/src/conn.c proxy/src/exchange.c proxy/src/upconn.c proxy/src/half.c
 * fuzz-links: proxy/src/loop.c proxy/src/iobuf.c proxy/src/http.c proxy/src/http_body.c
 * fuzz-links: proxy/src/config.c proxy/src/router.c proxy/src/balancer.c proxy/src/runtime.c
 * fuzz-links: proxy/src/log.c proxy/src/util.c proxy/src/tls.c proxy/src/stats.c lib/addr.c
 * fuzz-links: lib/wbuf.c
 * fuzz-links: -lhttp_parser -levent -lyaml -lssl -lcrypto -lpthread
 */
#define FUZZ_TLS 1
#include "fuzz_conn.c" /* NOLINT(bugprone-suspicious-include): the same harness, built twice */
