/* test_config: hmoe_config_parse on the hub config.json of Qwen3-Next-80B-A3B-Instruct
 * (MODEL.md §0), the transformers 5.x spelling (§0.1), the Qwen3NextConfig defaults, derived vs
 * explicit layer_types, MoE layer selection, eos int/list, tied embeddings, quantization_config,
 * and the errors for inconsistent or malformed configs. */
#include <stdio.h>

#include "hmoe/model.h"
#include "hmoe_test.h"

static const char *HUB =
    "{\"architectures\": [\"Qwen3NextForCausalLM\"], \"attention_dropout\": 0.0, "
    "\"bos_token_id\": 151643, \"decoder_sparse_step\": 1, \"eos_token_id\": 151645, "
    "\"full_attention_interval\": 4, \"head_dim\": 256, \"hidden_act\": \"silu\", "
    "\"hidden_size\": 2048, \"initializer_range\": 0.02, \"intermediate_size\": 5120, "
    "\"linear_conv_kernel_dim\": 4, \"linear_key_head_dim\": 128, \"linear_num_key_heads\": 16, "
    "\"linear_num_value_heads\": 32, \"linear_value_head_dim\": 128, "
    "\"max_position_embeddings\": 262144, \"mlp_only_layers\": [], \"model_type\": \"qwen3_next\", "
    "\"moe_intermediate_size\": 512, \"norm_topk_prob\": true, \"num_attention_heads\": 16, "
    "\"num_experts\": 512, \"num_experts_per_tok\": 10, \"num_hidden_layers\": 48, "
    "\"num_key_value_heads\": 2, \"output_router_logits\": false, \"partial_rotary_factor\": 0.25, "
    "\"rms_norm_eps\": 1e-06, \"rope_scaling\": null, \"rope_theta\": 10000000, "
    "\"router_aux_loss_coef\": 0.001, \"shared_expert_intermediate_size\": 512, "
    "\"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", "
    "\"transformers_version\": \"4.57.0.dev0\", \"use_cache\": true, "
    "\"use_sliding_window\": false, \"vocab_size\": 151936}";

static enum hmoe_status parse(const char *js, struct hmoe_config *c)
{
    hmoe_err_clear();
    return hmoe_config_parse(js, strlen(js), "cfg/config.json", c);
}

static void hub(void)
{
    struct hmoe_config c;
    CHECKF(parse(HUB, &c) == HMOE_OK, "%s", hmoe_err_msg());
    CHECK(c.hidden_size == 2048 && c.num_layers == 48 && c.vocab_size == 151936);
    CHECK(c.num_heads == 16 && c.num_kv_heads == 2 && c.head_dim == 256 && c.rotary_dim == 64);
    CHECK(c.rope_theta == 1e7f && c.partial_rotary_factor == 0.25f && c.rms_norm_eps == 1e-6f);
    CHECK(c.linear_num_key_heads == 16 && c.linear_num_value_heads == 32);
    CHECK(c.linear_key_head_dim == 128 && c.linear_value_head_dim == 128);
    CHECK(c.linear_conv_kernel_dim == 4);
    CHECK(c.num_experts == 512 && c.num_experts_per_tok == 10 && c.moe_intermediate_size == 512);
    CHECK(c.shared_expert_intermediate_size == 512 && c.intermediate_size == 5120);
    CHECK(c.norm_topk_prob == 1 && c.decoder_sparse_step == 1 && c.tie_word_embeddings == 0);
    CHECK(c.max_position_embeddings == 262144 && c.attention_bias == 0 && c.quantized == 0);
    CHECK(c.bos_token_id == 151643 && c.n_eos == 1 && c.eos_token_ids[0] == 151645);
    int full = 0;
    for (int i = 0; i < 48; i++) {
        CHECK(c.layer_types[i] == ((i % 4 == 3) ? HMOE_LAYER_FULL : HMOE_LAYER_LINEAR));
        CHECK(c.layer_is_moe[i] == 1);
        full += c.layer_types[i] == HMOE_LAYER_FULL;
    }
    CHECK(full == 12);
}

static void v5(void)
{
    char js[4096];
    int o = snprintf(
        js, sizeof js,
        "{\"model_type\": \"qwen3_next\", \"dtype\": \"bfloat16\", \"hidden_size\": 64, "
        "\"num_hidden_layers\": 5, \"num_attention_heads\": 4, \"num_key_value_heads\": 1, "
        "\"head_dim\": 24, \"rope_theta\": 99, \"partial_rotary_factor\": 0.5, "
        "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 5000000.0, "
        "\"partial_rotary_factor\": 0.34}, \"eos_token_id\": [151645, 151643], "
        "\"tie_word_embeddings\": true, \"num_experts\": 8, \"num_experts_per_tok\": 8, "
        "\"layer_types\": [");
    const char *lt[5] = {"full_attention", "linear_attention", "full_attention", "linear_attention",
                         "linear_attention"};
    for (int i = 0; i < 5; i++)
        o += snprintf(js + o, sizeof js - (size_t)o, "%s\"%s\"", i ? "," : "", lt[i]);
    snprintf(js + o, sizeof js - (size_t)o, "]}");
    struct hmoe_config c;
    CHECKF(parse(js, &c) == HMOE_OK, "%s", hmoe_err_msg());
    CHECK(c.rope_theta == 5e6f && c.partial_rotary_factor == 0.34f);
    CHECK(c.rotary_dim == 8); /* int(24 * 0.34) = int(8.16) */
    CHECK(c.n_eos == 2 && c.eos_token_ids[0] == 151645 && c.eos_token_ids[1] == 151643);
    CHECK(c.bos_token_id == -1 && c.tie_word_embeddings == 1);
    CHECK(c.layer_types[0] == HMOE_LAYER_FULL && c.layer_types[1] == HMOE_LAYER_LINEAR &&
          c.layer_types[2] == HMOE_LAYER_FULL && c.layer_types[4] == HMOE_LAYER_LINEAR);
    CHECK(c.num_experts_per_tok == 8);
}

static void defaults(void)
{
    struct hmoe_config c;
    CHECKF(parse("{}", &c) == HMOE_OK, "%s", hmoe_err_msg());
    /* transformers Qwen3NextConfig defaults */
    CHECK(c.hidden_size == 2048 && c.num_layers == 48 && c.vocab_size == 151936);
    CHECK(c.head_dim == 256 && c.rotary_dim == 64 && c.rope_theta == 10000.0f);
    CHECK(c.intermediate_size == 5632 && c.max_position_embeddings == 32768);
    CHECK(c.num_experts == 512 && c.num_experts_per_tok == 10 && c.num_kv_heads == 2);
    CHECK(c.bos_token_id == -1 && c.n_eos == 0 && c.tie_word_embeddings == 0);
    CHECK(c.layer_types[3] == HMOE_LAYER_FULL && c.layer_types[4] == HMOE_LAYER_LINEAR);
}

static void layers(void)
{
    struct hmoe_config c;
    CHECK(parse("{\"num_hidden_layers\": 7, \"full_attention_interval\": 3, "
                "\"mlp_only_layers\": [0, 5], \"decoder_sparse_step\": 2}",
                &c) == HMOE_OK);
    const int full[7] = {0, 0, 1, 0, 0, 1, 0};
    const int moe[7] = {0, 1, 0, 1, 0, 0, 0}; /* (i+1)%2==0 and not in {0,5} */
    for (int i = 0; i < 7; i++) {
        CHECK(c.layer_types[i] == (full[i] ? HMOE_LAYER_FULL : HMOE_LAYER_LINEAR));
        CHECKF(c.layer_is_moe[i] == moe[i], "layer %d", i);
    }
    CHECK(parse("{\"num_hidden_layers\": 3, \"num_experts\": 0}", &c) == HMOE_OK);
    CHECK(!c.layer_is_moe[0] && !c.layer_is_moe[1] && !c.layer_is_moe[2]);
    CHECK(parse("{\"num_hidden_layers\": 2, \"full_attention_interval\": 1}", &c) == HMOE_OK);
    CHECK(c.layer_types[0] == HMOE_LAYER_FULL && c.layer_types[1] == HMOE_LAYER_FULL);
}

static void quant(void)
{
    struct hmoe_config c;
    CHECK(parse("{\"quantization_config\": {\"_load_in_4bit\": true, \"bnb_4bit_quant_type\": "
                "\"nf4\", \"bnb_4bit_use_double_quant\": true, \"load_in_4bit\": true, "
                "\"load_in_8bit\": false, \"quant_method\": \"bitsandbytes\", "
                "\"llm_int8_skip_modules\": null}}",
                &c) == HMOE_OK);
    CHECK(c.quantized == 1);
}

/* Must fail with status st and a message containing `needle` and the file name. */
static void bad(const char *js, enum hmoe_status st, const char *needle)
{
    struct hmoe_config c;
    enum hmoe_status got = parse(js, &c);
    CHECKF(got == st, "'%s': status %d, expected %d (%s)", js, got, st, hmoe_err_msg());
    CHECKF(strstr(hmoe_err_msg(), needle) && strstr(hmoe_err_msg(), "cfg/config.json"),
           "'%s': message '%s' lacks '%s'", js, hmoe_err_msg(), needle);
}

static void errors(void)
{
    const enum hmoe_status F = HMOE_E_FORMAT, U = HMOE_E_UNSUPPORTED;
    bad("{\"hidden_size\": 64,", F, "JSON");
    bad("", F, "JSON");
    bad("[1, 2]", F, "object");
    bad("{\"hidden_size\": 0}", F, "hidden_size");
    bad("{\"hidden_size\": -64}", F, "hidden_size");
    bad("{\"hidden_size\": 64.5}", F, "hidden_size");
    bad("{\"hidden_size\": \"64\"}", F, "hidden_size");
    bad("{\"hidden_size\": 1e300}", F, "hidden_size");
    bad("{\"num_hidden_layers\": 257}", F, "num_hidden_layers");
    bad("{\"num_attention_heads\": 16, \"num_key_value_heads\": 3}", F, "num_key_value_heads");
    bad("{\"linear_num_key_heads\": 16, \"linear_num_value_heads\": 24}", F,
        "linear_num_value_heads");
    bad("{\"num_experts\": 4, \"num_experts_per_tok\": 5}", F, "num_experts_per_tok");
    bad("{\"num_experts\": 4, \"num_experts_per_tok\": 0}", F, "num_experts_per_tok");
    bad("{\"head_dim\": 12}", F, "rotary");                 /* int(12*0.25) = 3: odd */
    bad("{\"partial_rotary_factor\": 0.001}", F, "rotary"); /* int(256*0.001) = 0 */
    bad("{\"partial_rotary_factor\": 1.5}", F, "partial_rotary_factor");
    bad("{\"rope_theta\": -1}", F, "rope_theta");
    bad("{\"rope_parameters\": {\"rope_theta\": \"x\"}}", F, "rope_theta");
    bad("{\"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 4}}", U, "yarn");
    bad("{\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2}}", U, "linear");
    bad("{\"rope_parameters\": [1]}", F, "rope_parameters");
    bad("{\"rms_norm_eps\": 0}", F, "rms_norm_eps");
    bad("{\"attention_bias\": true}", U, "attention_bias");
    bad("{\"model_type\": \"llama\"}", U, "llama");
    bad("{\"hidden_act\": \"gelu\"}", U, "hidden_act");
    bad("{\"tie_word_embeddings\": \"yes\"}", F, "tie_word_embeddings");
    bad("{\"num_hidden_layers\": 2, \"layer_types\": [\"full_attention\"]}", F, "layer_types");
    bad("{\"num_hidden_layers\": 2, \"layer_types\": [\"full_attention\", \"sliding\"]}", F,
        "layer_types[1]");
    bad("{\"layer_types\": \"full_attention\"}", F, "layer_types");
    bad("{\"full_attention_interval\": 0}", F, "full_attention_interval");
    bad("{\"num_hidden_layers\": 4, \"mlp_only_layers\": [4]}", F, "mlp_only_layers");
    bad("{\"mlp_only_layers\": 3}", F, "mlp_only_layers");
    bad("{\"decoder_sparse_step\": 0}", F, "decoder_sparse_step");
    bad("{\"eos_token_id\": -1}", F, "eos_token_id");
    bad("{\"eos_token_id\": [1,2,3,4,5,6,7,8,9]}", F, "eos_token_id");
    bad("{\"eos_token_id\": [1, \"x\"]}", F, "eos_token_id");
    bad("{\"bos_token_id\": 1.5}", F, "bos_token_id");
    bad("{\"quantization_config\": {\"quant_method\": \"gptq\"}}", U, "gptq");
    bad("{\"quantization_config\": {\"quant_method\": \"bitsandbytes\", \"load_in_8bit\": true}}",
        U, "load_in_4bit");
    bad("{\"quantization_config\": {\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": true, "
        "\"bnb_4bit_quant_type\": \"fp4\"}}",
        U, "fp4");
    bad("{\"quantization_config\": 5}", F, "quantization_config");
    bad("{\"num_attention_heads\": 65536, \"head_dim\": 65536}", F, "large");
}

int main(void)
{
    hub();
    v5();
    defaults();
    layers();
    quant();
    errors();
    TEST_DONE();
}
