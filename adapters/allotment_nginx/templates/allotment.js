// allotment for nginx (njs >= 0.7): body-aware pre-authorization and token-usage capture.
// preauth: js_content handler that asks allotment's /v1/authorize, passes denials through
// with their real status and JSON body, then redirects to @llm_upstream.
// filter: js_body_filter that reads usage from JSON and SSE replies into js_var variables.

var crypto = require('crypto');

var SSE_LINE_CAP = 65536;        // a partial SSE line longer than this is dropped
var JSON_CAP = 2 * 1024 * 1024;  // JSON bodies past this are not parsed (logged as skipped)

function keyOf(r) {
    var auth = r.headersIn['Authorization'] || '';
    var m = /^\s*bearer\s+(.+?)\s*$/i.exec(auth);
    if (m) { return m[1]; }
    return (r.headersIn['X-Api-Key'] || '').trim();
}

// The SHA-256 of the caller's key (never the key itself): allotment resolves it to a person.
function key_hash(r) {
    var key = keyOf(r);
    return key ? crypto.createHash('sha256').update(key).digest('hex') : '';
}

function labelName(name) {
    return String(name).trim().toLowerCase().replace(/_/g, '-');
}

// The request body's `metadata` object, when nginx kept the body in memory (see
// client_body_buffer_size); null otherwise. The body is parsed only if it mentions metadata.
function bodyMetadata(r) {
    var text;
    try { text = r.requestText; } catch (e) { return null; }
    if (!text || text.length > JSON_CAP || text.indexOf('"metadata"') < 0) { return null; }
    var body;
    try { body = JSON.parse(text); } catch (e) { return null; }
    var meta = body && typeof body === 'object' ? body.metadata : null;
    return meta && typeof meta === 'object' && !Array.isArray(meta) ? meta : null;
}

// Labels as the gateway reads them: the body metadata's string values (but user_id and the
// trace/retry links), then X-Allotment-Label-<Name> headers, which win; a JSON object, so
// passive lines carry their labels. Names lower-case, `_` read as `-`.
function labels(r) {
    var out = {};
    var any = false;
    var meta = bodyMetadata(r);
    if (meta) {
        for (var key in meta) {
            var label = labelName(key);
            if (typeof meta[key] === 'string' && label !== 'user-id' && label !== 'trace-id'
                && label !== 'retry-of' && label) {
                out[label] = meta[key];
                any = true;
            }
        }
    }
    for (var name in r.headersIn) {
        var lower = name.toLowerCase();
        if (lower.indexOf('x-allotment-label-') === 0) {
            out[labelName(lower.substring(18))] = String(r.headersIn[name]).trim();
            any = true;
        }
    }
    return any ? JSON.stringify(out) : '';
}

// The workflow trace id: the X-Allotment-Trace-Id header, else the body metadata's trace_id.
function trace_id(r) {
    var header = r.headersIn['X-Allotment-Trace-Id'];
    if (header) { return String(header).trim(); }
    var meta = bodyMetadata(r);
    if (meta) {
        for (var key in meta) {
            if (labelName(key) === 'trace-id' && typeof meta[key] === 'string') { return meta[key]; }
        }
    }
    return '';
}

// The request body's size in bytes: what passive mode estimates an aborted stream's input
// from. The body in memory, else its Content-Length; '' when neither is known.
function request_body_bytes(r) {
    var body;
    try { body = r.requestBuffer; } catch (e) { body = undefined; }
    if (body) { return String(body.length); }
    var declared = String(r.headersIn['Content-Length'] || '').trim();
    return /^[0-9]{1,9}$/.test(declared) ? declared : '';
}

function deny(r, status, body, reason) {
    r.variables.authz_deny_status = String(status);
    r.variables.authz_reason = reason;
    r.headersOut['Content-Type'] = 'application/json';
    r.headersOut['X-Should-Retry'] = 'false';
    r.return(status, body);
}

function denyJson(r, status, type, code, message) {
    var body = {error: {type: type, code: code, message: message, param: null,
                        request_id: r.variables.request_id}};
    deny(r, status, JSON.stringify(body) + '\n', code);
}

async function preauth(r) {
    var body;
    try {
        body = JSON.parse(r.requestText || '');
    } catch (e) {
        body = null;
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
        denyJson(r, 400, 'invalid_request_error', 'invalid_request', 'the request body must be a JSON object');
        return;
    }
    if (typeof body.model !== 'string' || !body.model) {
        denyJson(r, 400, 'invalid_request_error', 'invalid_request', '`model` is required');
        return;
    }
    var ask = Object.assign({}, body);
    ask.request_id = r.variables.request_id;
    var maxOut = body.max_completion_tokens || body.max_tokens || body.max_output_tokens;
    if (typeof maxOut === 'number') { ask.max_output_tokens = maxOut; }
    delete ask.max_tokens;
    delete ask.max_completion_tokens;
    var reply;
    try {
        reply = await r.subrequest('/_allotment_authorize', {method: 'POST', body: JSON.stringify(ask)});
    } catch (e) {
        reply = null;
    }
    if (reply === null || reply.status >= 500 && reply.status !== 503 || reply.status === 0) {
        // fail closed: no decision means no call
        denyJson(r, 503, 'server_error', 'ledger_unavailable', 'the allotment decision service is unavailable');
        return;
    }
    if (reply.status !== 200) {
        var reason = 'denied';
        try { reason = JSON.parse(reply.responseText).error.code || reason; } catch (e) {}
        deny(r, reply.status, reply.responseText, reason);
        return;
    }
    var admitted = {};
    try { admitted = JSON.parse(reply.responseText); } catch (e) {}
    var principal = admitted.principal || {};
    r.variables.authz_reservation = admitted.reservation_id || '';
    r.variables.authz_person = principal.person_id || '';
    r.variables.authz_key_id = principal.key_id || '';
    r.variables.llm_model = body.model;
    r.variables.llm_stream = body.stream ? 'true' : 'false';
    if (body.stream) {
        // usage exists in a stream only when asked for; ask for it so the log can settle it
        var opts = Object.assign({}, body.stream_options || {});
        if (!opts.include_usage) {
            opts.include_usage = true;
            body.stream_options = opts;
        }
    }
    r.variables.llm_body = JSON.stringify(body);
    r.internalRedirect('@llm_upstream');
}

function num(v) {
    return (typeof v === 'number' && isFinite(v) && v >= 0) ? String(Math.floor(v)) : '';
}

// Normalise both wire shapes to OpenAI's meaning: prompt_tokens includes cached and written.
function record(r, usage, src, state) {
    var v = r.variables;
    if (usage.prompt_tokens !== undefined || usage.completion_tokens !== undefined) {
        var pd = usage.prompt_tokens_details || {};
        var cd = usage.completion_tokens_details || {};
        v.llm_prompt_tokens = num(usage.prompt_tokens);
        v.llm_completion_tokens = num(usage.completion_tokens);
        v.llm_total_tokens = num(usage.total_tokens);
        v.llm_cached_tokens = num(pd.cached_tokens || 0);
        v.llm_cache_write_tokens = '0';  // OpenAI does not charge cache writes
        v.llm_reasoning_tokens = num(cd.reasoning_tokens || 0);
    } else if (usage.input_tokens !== undefined && usage.output_tokens !== undefined &&
               usage.cache_read_input_tokens === undefined && usage.cache_creation_input_tokens === undefined &&
               usage.input_tokens_details !== undefined) {
        // OpenAI Responses API
        var id = usage.input_tokens_details || {};
        var od = usage.output_tokens_details || {};
        v.llm_prompt_tokens = num(usage.input_tokens);
        v.llm_completion_tokens = num(usage.output_tokens);
        v.llm_total_tokens = num(usage.total_tokens);
        v.llm_cached_tokens = num(id.cached_tokens || 0);
        v.llm_cache_write_tokens = '0';
        v.llm_reasoning_tokens = num(od.reasoning_tokens || 0);
    } else {
        // Anthropic: message_start carries input and cache counts, message_delta the output
        var a = state.anthropic;
        ['input_tokens', 'cache_read_input_tokens', 'cache_creation_input_tokens', 'output_tokens']
            .forEach(function (k) { if (typeof usage[k] === 'number') { a[k] = usage[k]; } });
        var prompt = (a.input_tokens || 0) + (a.cache_read_input_tokens || 0) + (a.cache_creation_input_tokens || 0);
        v.llm_prompt_tokens = String(prompt);
        v.llm_completion_tokens = String(a.output_tokens || 0);
        v.llm_total_tokens = String(prompt + (a.output_tokens || 0));
        v.llm_cached_tokens = String(a.cache_read_input_tokens || 0);
        v.llm_cache_write_tokens = String(a.cache_creation_input_tokens || 0);
        v.llm_reasoning_tokens = '0';
    }
    // Anthropic says which service tier served the call inside usage
    if (typeof usage.service_tier === 'string') { v.llm_service_tier = usage.service_tier.substring(0, 40); }
    v.llm_usage_src = src;
}

function utf8Length(text) {
    return typeof text === 'string' && text ? Buffer.from(text).length : 0;
}

// UTF-8 bytes of the answer a stream event carries (text, tool-call arguments, reasoning):
// what an aborted stream delivered, logged so the tailer can estimate its output tokens.
function deltaBytes(msg) {
    var n = 0;
    var delta = msg.delta;
    if (typeof delta === 'string') {
        n += utf8Length(delta);  // Responses API: response.output_text.delta and the like
    } else if (delta && typeof delta === 'object') {
        // Anthropic: content_block_delta (text, tool input JSON, thinking)
        n += utf8Length(delta.text) + utf8Length(delta.partial_json) + utf8Length(delta.thinking);
    }
    var choices = Array.isArray(msg.choices) ? msg.choices : [];
    for (var i = 0; i < choices.length; i++) {
        var c = choices[i] || {};
        n += utf8Length(c.text);  // completions
        var d = c.delta;
        if (d && typeof d === 'object') {
            n += utf8Length(d.content) + utf8Length(d.reasoning_content) + utf8Length(d.refusal);
            var calls = Array.isArray(d.tool_calls) ? d.tool_calls : [];
            for (var j = 0; j < calls.length; j++) {
                var fn = (calls[j] || {})['function'] || {};
                n += utf8Length(fn.name) + utf8Length(fn.arguments);
            }
        }
    }
    return n;
}

function seeMessage(r, msg, src, state) {
    if (!msg || typeof msg !== 'object') { return; }
    if (src === 'sse') {
        var n = deltaBytes(msg);
        if (n) {
            state.delivered += n;
            r.variables.llm_delivered_bytes = String(state.delivered);
        }
    }
    if (typeof msg.model === 'string' && !r.variables.llm_model) { r.variables.llm_model = msg.model; }
    // OpenAI says which service tier served the call at the top level (response and every chunk)
    var holder = msg.type === 'response.completed' && msg.response ? msg.response : msg;
    if (typeof holder.service_tier === 'string') {
        r.variables.llm_service_tier = holder.service_tier.substring(0, 40);
    }
    var usage = msg.usage;
    if (msg.type === 'message_start' && msg.message) {
        usage = msg.message.usage;
        // its output_tokens is a placeholder until message_delta brings the count: a stream
        // cut before then logs "sse:partial", and the tailer counts the delivered bytes
        if (src === 'sse') { src = 'sse:partial'; }
        if (typeof msg.message.model === 'string' && !r.variables.llm_model) {
            r.variables.llm_model = msg.message.model;
        }
    } else if (msg.type === 'response.completed' && msg.response) {
        usage = msg.response.usage;
    }
    if (usage && typeof usage === 'object') { record(r, usage, src, state); }
}

function sseLine(r, line, state) {
    if (line.charCodeAt(line.length - 1) === 13) { line = line.substring(0, line.length - 1); }
    if (line.indexOf('data:') !== 0 || line.indexOf('"usage"') < 0 && line.indexOf('"model"') < 0 &&
        line.indexOf('"delta"') < 0 && line.indexOf('"text"') < 0 &&
        line.indexOf('"service_tier"') < 0) { return; }
    var data = line.substring(5).trim();
    if (data === '[DONE]') { return; }
    try { seeMessage(r, JSON.parse(data), 'sse', state); } catch (e) {}
}

function classify(r, state) {
    var enc = r.variables.upstream_http_content_encoding || '';
    var type = r.headersOut['Content-Type'] || '';
    if (r.status !== 200) {
        state.mode = 'skip';
    } else if (enc && enc !== 'identity') {
        // judged by the upstream's header: nginx's own gzip has already set headersOut
        r.variables.llm_usage_src = 'skipped:content-encoding=' + enc;
        state.mode = 'skip';
    } else if (type.indexOf('text/event-stream') >= 0) {
        state.mode = 'sse';
        r.variables.llm_delivered_bytes = '0';
        // passive mode never read the request: an event stream is how it knows a stream
        if (!r.variables.llm_stream) { r.variables.llm_stream = 'true'; }
    } else if (type.indexOf('json') >= 0) {
        state.mode = 'json';
    } else {
        state.mode = 'skip';
    }
}

function consume(r, data, last, state) {
    if (state.mode === undefined) { classify(r, state); }
    if (state.mode === 'sse') {
        var buf = state.pending.length ? Buffer.concat([state.pending, data]) : data;
        var start = 0;
        var nl;
        while ((nl = buf.indexOf(10, start)) >= 0) {
            sseLine(r, buf.slice(start, nl).toString('utf8'), state);
            start = nl + 1;
        }
        state.pending = buf.slice(start);
        if (state.pending.length > SSE_LINE_CAP) { state.pending = Buffer.alloc(0); }
        if (last && state.pending.length) { sseLine(r, state.pending.toString('utf8'), state); }
    } else if (state.mode === 'json') {
        if (state.size + data.length > JSON_CAP) {
            state.mode = 'skip';
            r.variables.llm_usage_src = 'skipped:too-large';
            return;
        }
        state.chunks.push(data);
        state.size += data.length;
        if (last) {
            var doc = JSON.parse(Buffer.concat(state.chunks).toString('utf8'));
            seeMessage(r, doc, 'json', state);
            if (!r.variables.llm_usage_src) { r.variables.llm_usage_src = 'json:no-usage'; }
        }
    }
}

var state = null;  // njs clones the VM per request, so this is per request

function filter(r, data, flags) {
    // pass the bytes on first: nothing here may ever truncate the client's response
    r.sendBuffer(data, flags);
    try {
        if (state === null) {
            state = {pending: Buffer.alloc(0), chunks: [], size: 0, anthropic: {}, delivered: 0};
        }
        consume(r, data, flags.last, state);
    } catch (e) {
        if (!r.variables.llm_usage_src) { r.variables.llm_usage_src = 'error:' + String(e).substring(0, 60); }
    }
}

export default {preauth, filter, key_hash, labels, trace_id, request_body_bytes};
