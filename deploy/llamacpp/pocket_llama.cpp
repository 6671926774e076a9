// pocket-llama: a small driver over llama.cpp's own libraries (libllama, libmtmd, llama-common) for
// pocket-adapt's tests, `adapt chat/eval --runtime llamacpp` and the benchmarks.
//
//   pocket-llama -m MODEL.gguf [--mmproj MMPROJ.gguf] [-t THREADS] [-c N_CTX] [--kv-f32] [--extra-bufts] [--verbose]
//
// It loads the model once, then answers one JSON request per line on stdin with one JSON line on stdout
// (llama.cpp's logs go to stderr). Requests ("op"):
//
//   info                                   -> n_embd, n_vocab, projector facts, the embedded chat template
//   render   messages, add_generation_prompt -> prompt: the conversation rendered by the GGUF's own chat
//                                             template (llama.cpp's Jinja engine, as llama-mtmd-cli does)
//   tokenize text, add_special, parse_special -> ids
//   detokenize ids                         -> text (special tokens not rendered)
//   embed    image, out                    -> the projector's image embeddings, float32 rows written to `out`
//   generate messages|prompt, images, n_predict, temperature, seed, stop_ids, ignore_eos
//                                          -> prompt, prompt_ids, tokens, text, timings, stop: why it ended
//            ("eog": an end-of-generation or stop token, the last of `tokens`; "length": n_predict tokens;
//            "context": the context is full, every position holds a prompt or answer token and the last token
//            was drawn from the last position's logits)
//            (stop_ids, when given, are the whole stop set, as PyTorch's eos_token_id list is; without them
//            llama.cpp's own end tokens end an answer: eos, eot, eom and the texts it guesses, <|endoftext|> ...)
//            (or segments: [{"ids": [...]} | {"tiles": ...}], the caller's own token ids and tiles)
//
// An image is {"path": FILE} (decoded by llama.cpp), {"rgb": FILE, "width": W, "height": H} (raw RGB bytes)
// -- both go through llama.cpp's own preprocessing (tile grid, resize, padding) -- or
// {"tiles": FILE, "n_tiles": N, "size": S}: N raw RGB tiles of S x S pixels that the caller cut exactly as
// training did. Each tile is exactly one encoder input, so llama.cpp's preprocessing is the identity on it;
// the tiles' embeddings are concatenated and wrapped in the same text tokens mtmd puts around an image.
// Greedy decoding (temperature 0) is a plain argmax over the logits.
#include "chat.h"
#include "common.h"
#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using json = nlohmann::ordered_json;

static double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

static bool g_verbose = false;

static void log_cb(ggml_log_level level, const char * text, void *) {
    if (g_verbose || level >= GGML_LOG_LEVEL_WARN) {
        fputs(text, stderr);
    }
}

static std::vector<unsigned char> read_bytes(const std::string & path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        throw std::runtime_error("cannot read " + path);
    }
    return std::vector<unsigned char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// What to feed the language model: text tokens or precomputed embeddings (one row per position).
struct Segment {
    std::vector<llama_token> tokens;
    std::vector<float> embd;
    int n_rows = 0;
};

struct Runner {
    llama_model * model = nullptr;
    llama_context * lctx = nullptr;
    const llama_vocab * vocab = nullptr;
    mtmd_context * mctx = nullptr;
    common_chat_templates_ptr tmpls;
    int n_embd = 0;
    int n_batch = 512;
    int n_ctx = 4096;
    double image_ms = 0;  // encoder time of the last request

    ~Runner() {
        if (mctx) mtmd_free(mctx);
        if (lctx) llama_free(lctx);
        if (model) llama_model_free(model);
    }

    // kv_f32: the f32 path end to end -- KV cache in f32 and no flash attention (whose CPU kernel rounds K/V to
    // f16), in the LM and in the vision encoder.
    // extra_bufts: llama.cpp's extra CPU buffer types (weight repacking, Intel AMX). Off unless asked: on this
    // version the AMX Q8_0 matrix product crashes (SIGSEGV in ggml_backend_amx_mul_mat) for pocket-tiny's shapes.
    void load(const std::string & model_path, const std::string & mmproj, int threads, int ctx, bool kv_f32,
              bool extra_bufts) {
        llama_model_params mp = llama_model_default_params();
        mp.n_gpu_layers = 0;
        mp.use_extra_bufts = extra_bufts;
        model = llama_model_load_from_file(model_path.c_str(), mp);
        if (!model) throw std::runtime_error("failed to load model " + model_path);
        vocab = llama_model_get_vocab(model);
        n_ctx = ctx;
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = ctx;
        cp.n_batch = n_batch;
        cp.n_ubatch = n_batch;
        if (threads > 0) {
            cp.n_threads = threads;
            cp.n_threads_batch = threads;
        }
        if (kv_f32) {
            cp.type_k = GGML_TYPE_F32;
            cp.type_v = GGML_TYPE_F32;
            cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        }
        cp.no_perf = false;
        lctx = llama_init_from_model(model, cp);
        if (!lctx) throw std::runtime_error("failed to create a llama context");
        n_embd = llama_model_n_embd_inp(model);
        if (!mmproj.empty()) {
            mtmd_context_params mparams = mtmd_context_params_default();
            mparams.use_gpu = false;
            mparams.print_timings = false;
            mparams.warmup = false;
            if (kv_f32) mparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
            if (threads > 0) mparams.n_threads = threads;
            mctx = mtmd_init_from_file(mmproj.c_str(), model, mparams);
            if (!mctx) throw std::runtime_error("failed to load mmproj " + mmproj);
        }
        tmpls = common_chat_templates_init(model, "");
    }

    std::string render(const json & messages, bool add_generation_prompt) {
        common_chat_templates_inputs inputs;
        for (const auto & m : messages) {
            common_chat_msg msg;
            msg.role = m.at("role").get<std::string>();
            msg.content = m.at("content").get<std::string>();
            inputs.messages.push_back(msg);
        }
        inputs.add_generation_prompt = add_generation_prompt;
        inputs.use_jinja = true;
        return common_chat_templates_apply(tmpls.get(), inputs).prompt;
    }

    mtmd_bitmap * bitmap_of(const json & img) {
        if (!mctx) throw std::runtime_error("an image was given but no --mmproj was loaded");
        if (img.contains("path")) {
            auto res = mtmd_helper_bitmap_init_from_file(mctx, img["path"].get<std::string>().c_str(), false,
                                                         mtmd_helper_init_opt_default());
            if (!res.bitmap) throw std::runtime_error("llama.cpp could not read image " + img["path"].get<std::string>());
            return res.bitmap;
        }
        auto bytes = read_bytes(img.at("rgb").get<std::string>());
        uint32_t w = img.at("width").get<uint32_t>(), h = img.at("height").get<uint32_t>();
        if (bytes.size() != (size_t) w * h * 3) throw std::runtime_error("rgb file size does not match width x height x 3");
        return mtmd_bitmap_init(w, h, bytes.data());
    }

    // mtmd's tokenization of text with media markers; images encoded here (timed).
    void stock_segments(const std::string & prompt, const std::vector<mtmd_bitmap *> & bitmaps, bool add_special,
                        std::vector<Segment> & out) {
        mtmd_input_text text{prompt.c_str(), prompt.size(), add_special, true};
        mtmd_input_chunks * chunks = mtmd_input_chunks_init();
        std::vector<const mtmd_bitmap *> cb(bitmaps.begin(), bitmaps.end());
        int32_t res = mtmd_tokenize(mctx, chunks, &text, cb.data(), cb.size());
        if (res != 0) {
            mtmd_input_chunks_free(chunks);
            throw std::runtime_error("mtmd_tokenize failed (" + std::to_string(res) + "): markers and images disagree?");
        }
        for (size_t i = 0; i < mtmd_input_chunks_size(chunks); i++) {
            const mtmd_input_chunk * chunk = mtmd_input_chunks_get(chunks, i);
            Segment seg;
            if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
                size_t n = 0;
                const llama_token * ids = mtmd_input_chunk_get_tokens_text(chunk, &n);
                seg.tokens.assign(ids, ids + n);
            } else {
                size_t n = mtmd_input_chunk_get_n_tokens(chunk);
                double t0 = now_ms();
                if (mtmd_encode_chunk(mctx, chunk) != 0) {
                    mtmd_input_chunks_free(chunks);
                    throw std::runtime_error("mtmd_encode_chunk failed");
                }
                image_ms += now_ms() - t0;
                const float * e = mtmd_get_output_embd(mctx);
                seg.embd.assign(e, e + n * n_embd);
                seg.n_rows = (int) n;
            }
            out.push_back(std::move(seg));
        }
        mtmd_input_chunks_free(chunks);
    }

    // Tiles cut by the caller: each tile alone through mtmd (identity preprocessing), embeddings concatenated,
    // wrapped in the text mtmd puts around one image. Returns {before-wrap segment, embeddings, after-wrap}.
    void tile_segments(const json & img, std::vector<Segment> & out, bool wrap = true) {
        auto bytes = read_bytes(img.at("tiles").get<std::string>());
        int n_tiles = img.at("n_tiles").get<int>(), size = img.at("size").get<int>();
        size_t per = (size_t) size * size * 3;
        if (bytes.size() != per * n_tiles) throw std::runtime_error("tiles file size does not match n_tiles x size x size x 3");
        Segment before, embd, after;
        for (int t = 0; t < n_tiles; t++) {
            mtmd_bitmap * bm = mtmd_bitmap_init(size, size, bytes.data() + per * t);
            std::vector<Segment> parts;
            std::string marker = mtmd_default_marker();
            stock_segments(marker, {bm}, false, parts);
            mtmd_bitmap_free(bm);
            int seen_image = 0;
            for (auto & p : parts) {
                if (p.n_rows > 0) {
                    seen_image++;
                    embd.embd.insert(embd.embd.end(), p.embd.begin(), p.embd.end());
                    embd.n_rows += p.n_rows;
                } else if (t == 0) {
                    auto & dst = seen_image ? after : before;
                    dst.tokens.insert(dst.tokens.end(), p.tokens.begin(), p.tokens.end());
                }
            }
            if (seen_image != 1) throw std::runtime_error("a tile did not become exactly one image chunk; is it the encoder's input size?");
        }
        if (wrap && !before.tokens.empty()) out.push_back(std::move(before));
        out.push_back(std::move(embd));
        if (wrap && !after.tokens.empty()) out.push_back(std::move(after));
    }

    std::vector<Segment> plan(const std::string & prompt, const json & images) {
        std::vector<Segment> out;
        image_ms = 0;
        bool add_special = llama_vocab_get_add_bos(vocab);
        bool tiled = false;
        for (const auto & img : images) tiled = tiled || img.contains("tiles");
        if (!tiled) {
            if (images.empty()) {
                Segment s;
                s.tokens = common_tokenize(vocab, prompt, add_special, true);
                out.push_back(std::move(s));
                return out;
            }
            std::vector<mtmd_bitmap *> bitmaps;
            for (const auto & img : images) bitmaps.push_back(bitmap_of(img));
            try {
                stock_segments(prompt, bitmaps, add_special, out);
            } catch (...) {
                for (auto * b : bitmaps) mtmd_bitmap_free(b);
                throw;
            }
            for (auto * b : bitmaps) mtmd_bitmap_free(b);
            return out;
        }
        std::string marker = mtmd_default_marker();
        size_t start = 0, k = 0;
        while (true) {
            size_t pos = prompt.find(marker, start);
            std::string piece = prompt.substr(start, pos == std::string::npos ? std::string::npos : pos - start);
            if (!piece.empty() || (start == 0 && add_special)) {
                Segment s;
                s.tokens = common_tokenize(vocab, piece, start == 0 && add_special, true);
                out.push_back(std::move(s));
            }
            if (pos == std::string::npos) break;
            if (k >= images.size()) throw std::runtime_error("more media markers than images");
            const json & img = images[k++];
            if (!img.contains("tiles")) throw std::runtime_error("give every image as tiles, or none");
            tile_segments(img, out);
            start = pos + marker.size();
        }
        if (k != images.size()) throw std::runtime_error("fewer media markers than images");
        return out;
    }

    // Feed the plan to the LM; logits of the last position are kept.
    int eval(const std::vector<Segment> & segs) {
        llama_memory_clear(llama_get_memory(lctx), true);
        int n_past = 0;
        size_t total = 0;
        for (const auto & s : segs) total += s.n_rows ? s.n_rows : s.tokens.size();
        if ((int) total >= n_ctx) throw std::runtime_error("prompt of " + std::to_string(total) + " tokens does not fit the context of " + std::to_string(n_ctx));
        for (size_t si = 0; si < segs.size(); si++) {
            const Segment & s = segs[si];
            bool last_seg = si + 1 == segs.size();
            int n = s.n_rows ? s.n_rows : (int) s.tokens.size();
            for (int i0 = 0; i0 < n; i0 += n_batch) {
                int m = std::min(n_batch, n - i0);
                llama_batch b = llama_batch_init(m, s.n_rows ? n_embd : 0, 1);
                for (int j = 0; j < m; j++) {
                    if (s.n_rows) {
                        std::memcpy(b.embd + (size_t) j * n_embd, s.embd.data() + (size_t) (i0 + j) * n_embd, sizeof(float) * n_embd);
                    } else {
                        b.token[j] = s.tokens[i0 + j];
                    }
                    b.pos[j] = n_past + i0 + j;
                    b.n_seq_id[j] = 1;
                    b.seq_id[j][0] = 0;
                    b.logits[j] = last_seg && i0 + j == n - 1;
                }
                b.n_tokens = m;
                int rc = llama_decode(lctx, b);
                llama_batch_free(b);
                if (rc != 0) throw std::runtime_error("llama_decode failed (" + std::to_string(rc) + ")");
            }
            n_past += n;
        }
        return n_past;
    }

    // Caller-made segments: {"ids": [...]} (tokens as given) or {"tiles": ...} (embedding rows, no wrap tokens).
    std::vector<Segment> given_segments(const json & items) {
        std::vector<Segment> out;
        image_ms = 0;
        for (const auto & item : items) {
            if (item.contains("ids")) {
                Segment s;
                s.tokens = item["ids"].get<std::vector<llama_token>>();
                out.push_back(std::move(s));
            } else {
                tile_segments(item, out, false);
            }
        }
        return out;
    }

    json generate(const json & req) {
        std::string prompt;
        if (req.contains("prompt")) prompt = req["prompt"].get<std::string>();
        else if (req.contains("messages")) prompt = render(req["messages"], req.value("add_generation_prompt", true));
        json images = req.value("images", json::array());
        int n_predict = req.value("n_predict", 64);
        float temperature = req.value("temperature", 0.0f);
        uint32_t seed = req.value("seed", 0u);
        std::vector<llama_token> stop_ids = req.value("stop_ids", std::vector<llama_token>{});
        bool ignore_eos = req.value("ignore_eos", false);
        auto is_stop = [&](llama_token tok) {
            return stop_ids.empty() ? llama_vocab_is_eog(vocab, tok)
                                    : std::find(stop_ids.begin(), stop_ids.end(), tok) != stop_ids.end();
        };
        std::vector<llama_token> prompt_ids;  // image rows as -1

        double t0 = now_ms();
        auto segs = req.contains("segments") ? given_segments(req["segments"]) : plan(prompt, images);
        double t_plan = now_ms() - t0;
        int n_prompt = 0;
        for (const auto & s : segs) {
            if (s.n_rows) prompt_ids.insert(prompt_ids.end(), s.n_rows, -1);
            else prompt_ids.insert(prompt_ids.end(), s.tokens.begin(), s.tokens.end());
            n_prompt += s.n_rows ? s.n_rows : (int) s.tokens.size();
        }
        double t1 = now_ms();
        int n_past = eval(segs);
        double prompt_ms = now_ms() - t1;

        const int n_vocab = llama_vocab_n_tokens(vocab);
        std::mt19937 rng(seed);
        std::vector<llama_token> out;
        double t2 = now_ms();
        int n_decoded = 0;
        // why generation ended: checked in this order, so an end token drawn from the context's last position is
        // "eog", not "context" (the caller cannot tell those two apart from the token count)
        std::string stop_reason = "length";
        for (int i = 0; i < n_predict; i++) {
            const float * logits = llama_get_logits_ith(lctx, -1);
            llama_token tok;
            if (temperature <= 0) {
                tok = (llama_token) (std::max_element(logits, logits + n_vocab) - logits);
            } else {
                std::vector<double> p(n_vocab);
                double mx = *std::max_element(logits, logits + n_vocab);
                for (int v = 0; v < n_vocab; v++) p[v] = std::exp((logits[v] - mx) / temperature);
                std::discrete_distribution<int> dist(p.begin(), p.end());
                tok = dist(rng);
            }
            out.push_back(tok);
            if (is_stop(tok) && !ignore_eos) {
                stop_reason = "eog";
                break;
            }
            if (i + 1 == n_predict) break;
            if (n_past >= n_ctx) {  // every position holds a token: `tok`, drawn from the last one, has none
                stop_reason = "context";
                break;
            }
            llama_batch b = llama_batch_get_one(&tok, 1);
            // positions: llama_batch_get_one lets llama.cpp continue from the cache
            if (llama_decode(lctx, b) != 0) throw std::runtime_error("llama_decode failed while generating");
            n_past++;
            n_decoded++;
        }
        double decode_ms = now_ms() - t2;
        std::string text;
        for (auto tok : out) {
            if (is_stop(tok)) break;
            text += common_token_to_piece(vocab, tok, false);
        }
        json r;
        r["prompt"] = prompt;
        r["prompt_ids"] = prompt_ids;
        r["tokens"] = out;
        r["text"] = text;
        r["stop"] = stop_reason;
        r["timings"] = {{"image_encode_ms", image_ms},
                        {"plan_ms", t_plan},
                        {"prompt_ms", prompt_ms},
                        {"prompt_tokens", n_prompt},
                        {"decode_ms", decode_ms},
                        {"decode_tokens", n_decoded}};
        return r;
    }

    json embed(const json & req) {
        std::vector<Segment> segs;
        image_ms = 0;
        const json & img = req.at("image");
        if (img.contains("tiles")) {
            tile_segments(img, segs);
        } else {
            mtmd_bitmap * bm = bitmap_of(img);
            try {
                stock_segments(mtmd_default_marker(), {bm}, false, segs);
            } catch (...) {
                mtmd_bitmap_free(bm);
                throw;
            }
            mtmd_bitmap_free(bm);
        }
        std::vector<float> rows;
        json text_tokens = json::array();
        for (const auto & s : segs) {
            if (s.n_rows) rows.insert(rows.end(), s.embd.begin(), s.embd.end());
            else text_tokens.push_back(s.tokens);
        }
        std::string out = req.at("out").get<std::string>();
        FILE * f = fopen(out.c_str(), "wb");
        if (!f) throw std::runtime_error("cannot write " + out);
        fwrite(rows.data(), sizeof(float), rows.size(), f);
        fclose(f);
        json r;
        r["n_rows"] = rows.size() / n_embd;
        r["n_embd"] = n_embd;
        r["wrap_tokens"] = text_tokens;
        r["image_encode_ms"] = image_ms;
        return r;
    }

    json info() {
        json r;
        r["n_embd"] = n_embd;
        r["n_vocab"] = llama_vocab_n_tokens(vocab);
        r["add_bos"] = llama_vocab_get_add_bos(vocab);
        const char * tmpl = llama_model_chat_template(model, nullptr);
        r["chat_template"] = tmpl ? tmpl : "";
        r["vision"] = mctx ? mtmd_support_vision(mctx) : false;
        r["marker"] = mtmd_default_marker();
        return r;
    }

    json handle(const json & req) {
        std::string op = req.at("op").get<std::string>();
        if (op == "info") return info();
        if (op == "render") {
            json r;
            r["prompt"] = render(req.at("messages"), req.value("add_generation_prompt", true));
            return r;
        }
        if (op == "tokenize") {
            json r;
            r["ids"] = common_tokenize(vocab, req.at("text").get<std::string>(), req.value("add_special", false),
                                       req.value("parse_special", true));
            return r;
        }
        if (op == "detokenize") {
            json r;
            r["text"] = common_detokenize(vocab, req.at("ids").get<std::vector<llama_token>>(), false);
            return r;
        }
        if (op == "embed") return embed(req);
        if (op == "generate") return generate(req);
        throw std::runtime_error("unknown op " + op);
    }
};

int main(int argc, char ** argv) {
    std::string model, mmproj;
    int threads = 0, ctx = 4096;
    bool kv_f32 = false, extra_bufts = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                fprintf(stderr, "missing value for %s\n", a.c_str());
                exit(2);
            }
            return argv[++i];
        };
        if (a == "-m" || a == "--model") model = next();
        else if (a == "--mmproj") mmproj = next();
        else if (a == "-t" || a == "--threads") threads = std::stoi(next());
        else if (a == "-c" || a == "--ctx-size") ctx = std::stoi(next());
        else if (a == "--kv-f32") kv_f32 = true;
        else if (a == "--extra-bufts") extra_bufts = true;
        else if (a == "--verbose") g_verbose = true;
        else {
            fprintf(stderr, "usage: %s -m MODEL.gguf [--mmproj MMPROJ.gguf] [-t THREADS] [-c N_CTX] [--kv-f32] [--extra-bufts] [--verbose]\n", argv[0]);
            return 2;
        }
    }
    if (model.empty()) {
        fprintf(stderr, "usage: %s -m MODEL.gguf [--mmproj MMPROJ.gguf] ...\n", argv[0]);
        return 2;
    }
    llama_log_set(log_cb, nullptr);
    mtmd_helper_log_set(log_cb, nullptr);
    llama_backend_init();
    Runner runner;
    try {
        runner.load(model, mmproj, threads, ctx, kv_f32, extra_bufts);
    } catch (const std::exception & e) {
        std::cout << json({{"error", e.what()}}).dump() << std::endl;
        return 1;
    }
    std::cout << json({{"ready", true}}).dump() << std::endl;
    std::string line;
    while (std::getline(std::cin, line)) {
        if (line.empty()) continue;
        json resp;
        try {
            resp = runner.handle(json::parse(line));
        } catch (const std::exception & e) {
            resp = {{"error", e.what()}};
        }
        std::cout << resp.dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
    }
    llama_backend_free();
    return 0;
}
