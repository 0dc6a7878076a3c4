/* hmac-auth: the WIT glue. The logic is in hmac_auth.c; this file converts
 * between the generated bindings (auth.h, from `wit-bindgen c`) and it.
 *
 * Ownership (canonical ABI, as wit-bindgen c implements it): the arguments are
 * ours to free; what we return must be malloc'd, because the generated
 * `cabi_post_*` functions free() every returned string and list after the host
 * has copied them out. */
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "hmac_auth.h"

static void set_string(auth_string_t *out, const char *s, size_t len) {
    auth_string_dup_n(out, s, len); /* malloc'd copy; freed by the post-return */
}

static void host_log(int level, const auth_string_t *request_id, const char *what, size_t len) {
    strbuf line = {0};
    sb_str(&line, "request ");
    sb_mem(&line, request_id->ptr, request_id->len);
    sb_str(&line, ": ");
    sb_mem(&line, what, len);
    auth_string_t message = {(uint8_t *)line.data, line.len};
    wasmgate_plugin_host_log((wasmgate_plugin_host_level_t)level, &message);
    sb_free(&line);
}

static void set_header(wasmgate_plugin_types_header_t *h, const char *name, const char *value, size_t len) {
    set_string(&h->f0, name, strlen(name));
    h->f1.len = len;
    h->f1.ptr = malloc(len ? len : 1);
    if (!h->f1.ptr) abort();
    memcpy(h->f1.ptr, value, len);
}

/* A JSON refusal: 401 with the challenge, or 500 when the stage is misconfigured. */
static void answer(auth_response_t *resp, const hmac_config *config, const hmac_verdict *verdict) {
    strbuf body = {0}, challenge = {0};
    hmac_refusal_body(verdict, &body);
    size_t count = verdict->status == 401 ? 2 : 1;
    resp->status = verdict->status;
    resp->headers.len = count;
    resp->headers.ptr = calloc(count, sizeof *resp->headers.ptr);
    if (!resp->headers.ptr) abort();
    set_header(&resp->headers.ptr[0], "content-type", "application/json", 16);
    if (count == 2) {
        hmac_challenge(config, &challenge);
        set_header(&resp->headers.ptr[1], "www-authenticate", challenge.data, challenge.len);
        sb_free(&challenge);
    }
    resp->body.is_some = true;
    resp->body.val.len = body.len;
    resp->body.val.ptr = (uint8_t *)sb_take(&body);
}

bool exports_auth_authenticate(auth_request_t *req, auth_context_t *ctx, auth_identity_t *ret,
                               auth_response_t *err) {
    auth_string_t json;
    wasmgate_plugin_host_config(&json);
    hmac_config config;
    strbuf problem = {0};
    hmac_verdict verdict;
    bool accepted = false;

    if (!hmac_config_parse((const char *)json.ptr, json.len, &config, &problem)) {
        /* validate-config refused this config at load; this is only a safety net. Fail closed. */
        memset(&verdict, 0, sizeof verdict);
        verdict.status = 500;
        verdict.error = "stage_misconfigured";
        sb_str(&verdict.message, "the gateway cannot check this request's signature");
        host_log(HMAC_LOG_ERROR, &ctx->request_id, problem.data, problem.len);
        answer(err, &config, &verdict);
        hmac_verdict_free(&verdict);
        sb_free(&problem);
        goto done;
    }

    hmac_header *headers = calloc(req->headers.len ? req->headers.len : 1, sizeof *headers);
    if (!headers) abort();
    for (size_t i = 0; i < req->headers.len; i++) {
        headers[i].name = (const char *)req->headers.ptr[i].f0.ptr;
        headers[i].name_len = req->headers.ptr[i].f0.len;
        headers[i].value = req->headers.ptr[i].f1.ptr;
        headers[i].value_len = req->headers.ptr[i].f1.len;
    }
    hmac_request request = {
        .method = (const char *)req->method.ptr,
        .method_len = req->method.len,
        .uri = (const char *)req->uri.ptr,
        .uri_len = req->uri.len,
        .headers = headers,
        .header_count = req->headers.len,
        .has_body = req->body.is_some,
        .body = req->body.is_some ? req->body.val.ptr : NULL,
        .body_len = req->body.is_some ? req->body.val.len : 0,
    };
    hmac_verify(&config, &request, wasmgate_plugin_host_now_millis(), &verdict);
    if (verdict.log.len) host_log(verdict.log_level, &ctx->request_id, verdict.log.data, verdict.log.len);

    if (verdict.outcome == HMAC_ACCEPT) {
        const hmac_key *key = verdict.key;
        set_string(&ret->subject, key->subject, strlen(key->subject));
        ret->claims.len = 1;
        ret->claims.ptr = malloc(sizeof *ret->claims.ptr);
        if (!ret->claims.ptr) abort();
        set_string(&ret->claims.ptr[0].f0, "key-id", 6);
        set_string(&ret->claims.ptr[0].f1, key->id, strlen(key->id));
        accepted = true;
    } else {
        answer(err, &config, &verdict);
    }
    hmac_verdict_free(&verdict);
    free(headers);
    hmac_config_free(&config);

done:
    auth_string_free(&json);
    auth_request_free(req);
    auth_context_free(ctx);
    return accepted;
}

bool exports_wasmgate_plugin_config_check_validate_config(auth_string_t *text, auth_string_t *err) {
    hmac_config config;
    strbuf problem = {0};
    bool ok = hmac_config_parse((const char *)text->ptr, text->len, &config, &problem);
    auth_string_free(text);
    if (ok) {
        hmac_config_free(&config);
        return true;
    }
    err->len = problem.len;
    err->ptr = (uint8_t *)sb_take(&problem); /* malloc'd: the post-return frees it */
    return false;
}
