"""The composite vision-language model: vision tower + projector + any transformers causal LM.

Module names follow transformers' InternVL (`vision_tower`, `multi_modal_projector`) so that the
native layout is a prefix rename away; the LLM is kept whole (`language_model` = a
`*ForCausalLM`), which lets any causal LM plug in and keeps its own `generate` and KV cache.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    DynamicCache,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.cache_utils import DynamicLayer
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import CausalLMOutputWithPast

from .errors import ModelConfigError, PocketAdaptError
from .loss import supervised_token_losses
from .processor import IGNORE_INDEX
from .projectors import AdaptedProjector, PixelShuffleMLPProjector, build_projector, first_linear, projector_tokens
from .tiling import TilingConfig
from .vision import build_vision_tower, patch_grid, select_features


class ImageTokenMismatchError(PocketAdaptError, ValueError):
    """The number of image-context tokens differs from the number of image features."""


@strict
class PocketVLMConfig(PreTrainedConfig):
    """Config of a pocket-adapt VLM.

    `vision_config` / `text_config` are any transformers configs (InternViT, CLIP; Qwen2, Llama,
    Phi-3, ...). `projector_options` go to the projector (e.g. `downsample_ratio`, `ps_version`).
    `tiling` and `chat_template` are the one place the preprocessing of this model is written down:
    training, evaluation, demos and export all read them from here. `vision_adapter_width`: set when a vision
    adapter (`nn.Linear`, tower width -> this width) sits in front of the projector, which then reads features
    of this width (a distilled student in its teacher's VLM); None: the projector reads the tower's features.
    """

    model_type = "pocket_vlm"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="internvl_vision"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    vision_feature_layer: int = -1
    vision_adapter_width: int | None = None
    projector_type: str = "pixel_shuffle_mlp"
    projector_options: dict | None = None
    image_token_id: int = 0
    image_context_token: str = "<IMG_CONTEXT>"
    image_start_token: str | None = "<img>"
    image_end_token: str | None = "</img>"
    tiling: dict | None = None
    chat_template: str = "Hermes-2"
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.projector_options = dict(self.projector_options or {})
        self.tiling = TilingConfig.from_dict(self.tiling or {}).to_dict()
        # tying is decided by the LLM itself; mirror it so save/load of the composite agrees
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))

    @property
    def tiling_config(self) -> TilingConfig:
        return TilingConfig.from_dict(self.tiling)

    @property
    def image_seq_length(self) -> int:
        """Image tokens one tile becomes after the projector."""
        rows, cols = patch_grid(self.vision_config)
        return projector_tokens(self.projector_type, rows, cols, **self.projector_options)


@dataclass
class VLMOutput(CausalLMOutputWithPast):
    """The LLM's causal-LM output plus the projected image features.

    Built on transformers' own class so that the cache field carries whatever name the installed
    transformers gives it (`past_key_values` up to 5.23, `cache` from 5.24).
    """

    image_hidden_states: torch.Tensor | None = None
    token_losses: torch.Tensor | None = None
    router_loss: torch.Tensor | None = None  # loss_only: `router_aux_loss_coef * aux_loss` of a MoE LM, in `loss`


_VLM_OUTPUT_FIELDS = frozenset(field.name for field in fields(VLMOutput))
_CACHE_KWARG = "cache" if "cache" in _VLM_OUTPUT_FIELDS else "past_key_values"  # the KV cache's name, as above
_MIN_SHARED_PREFIX = 2  # common prefix tokens worth a forward pass of their own
# LMs whose logits are exactly `lm_head(last hidden state)` (no soft-capping, scaling or extra heads), so the
# training loss may take the hidden states and project only supervised positions
_PLAIN_HEAD_LMS = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "internlm2"})


class PocketVLM(PreTrainedModel):
    """Tiles → vision tower → projector → image-token merge → causal LM."""

    config: PocketVLMConfig
    config_class = PocketVLMConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: PocketVLMConfig):
        super().__init__(config)
        self.vision_tower = build_vision_tower(config.vision_config)
        projector = build_projector(
            config.projector_type,
            config.vision_adapter_width or config.vision_config.hidden_size,
            config.text_config.hidden_size,
            **config.projector_options,
        )
        if config.vision_adapter_width:
            projector = AdaptedProjector(
                nn.Linear(config.vision_config.hidden_size, config.vision_adapter_width), projector)
        self._check_projector_grid(projector, config.projector_type)
        self.multi_modal_projector = projector
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()

    def _check_projector_grid(self, projector: nn.Module, projector_type: str) -> None:
        """`ModelConfigError` naming the tower's patch grid when the projector cannot read it (a non-square grid for
        the grid projectors and the resampler): else the model builds, and a grid whose token count happens to be a
        square (2x8 = 4x4) is read with the wrong rows and columns, silently."""
        vision = self.config.vision_config
        if getattr(vision, "image_size", None) is None or getattr(vision, "patch_size", None) is None:
            return
        rows, cols = patch_grid(vision)
        try:
            projector.num_tokens(rows, cols)
        except ValueError as err:
            raise ModelConfigError(
                f"the vision tower's {rows}x{cols} patch grid (vision_config image_size {vision.image_size}, "
                f"patch_size {vision.patch_size}) cannot feed the {projector_type} projector: {err}"
            ) from None

    def replace_projector(self, projector_type: str, projector_options: dict | None = None) -> None:
        """Swap in a freshly initialised projector (any registered name) and record it in the config, so the
        processor's image-token count and saved checkpoints follow it."""
        options = dict(projector_options or {})
        reference = next(self.multi_modal_projector.parameters(), None)
        projector = build_projector(
            projector_type, self.config.vision_config.hidden_size, self.config.text_config.hidden_size, **options
        )
        if reference is not None:
            projector = projector.to(device=reference.device, dtype=reference.dtype)
        self._check_projector_grid(projector, projector_type)
        self.multi_modal_projector = projector
        self.config.projector_type, self.config.projector_options = projector_type, options
        self.config.vision_adapter_width = None  # a fresh projector reads the tower's own features

    @property
    def projector_width(self) -> int:
        """The feature width the projector itself reads: the vision adapter's output, else the tower's width."""
        return self.config.vision_adapter_width or self.config.vision_config.hidden_size

    @property
    def own_projector(self) -> nn.Module:
        """The projector without the vision adapter in front of it (if there is one)."""
        projector = self.multi_modal_projector
        return projector.projector if isinstance(projector, AdaptedProjector) else projector

    def fold_vision_adapter(self) -> None:
        """Merge the vision adapter into the projector's first op where that is a per-token Linear (`linear`,
        `mlp{N}x_gelu`, `ldp`, `ldpv2`): W1·(Wa·x + ba) + b1 = (W1·Wa)·x + (W1·ba + b1), the same outputs;
        afterwards the projector reads the tower's features directly, so layouts without a slot for the adapter can
        hold it.
        Refused (`ModelConfigError`, saying why) for the others: `pixel_shuffle_mlp` (InternVL's) shuffles 2x2
        tokens together and then applies a LayerNorm, which does not commute with a Linear in front of it;
        `qformer` starts with attention over the tokens, `resampler` with a LayerNorm after its `kv_proj`.
        A model without a vision adapter is left as it is."""
        if not isinstance(self.multi_modal_projector, AdaptedProjector):
            return
        adapter, projector = self.multi_modal_projector.adapter, self.multi_modal_projector.projector
        first = first_linear(projector)
        if first is None:
            raise ModelConfigError(
                f"the model has a vision adapter (a Linear {adapter.in_features} -> {adapter.out_features} from a "
                f"distilled tower) in front of its {self.config.projector_type} projector, and it cannot be folded "
                "into it: " + ("pixel_shuffle_mlp concatenates 2x2 neighbouring tokens and then applies a LayerNorm, "
                               "which a Linear in front of it does not commute with"
                               if self.config.projector_type == "pixel_shuffle_mlp" else
                               f"{self.config.projector_type} does not start with a per-token Linear")
                + ". Export to a format that runs the whole module (pocket, onnx, executorch, tensorrt), or train "
                "with model.vision_adapter: fresh (a projector that reads the student's features directly)")
        with torch.no_grad():
            weight = first.weight.float() @ adapter.weight.float()
            bias = first.weight.float() @ adapter.bias.float() + (first.bias.float() if first.bias is not None else 0)
            first.weight = nn.Parameter(weight.to(first.weight.dtype), requires_grad=first.weight.requires_grad)
            first.bias = nn.Parameter(bias.to(first.weight.dtype), requires_grad=first.weight.requires_grad)
        first.in_features = adapter.in_features
        if hasattr(projector, "vision_hidden"):
            projector.vision_hidden = adapter.in_features
        self.multi_modal_projector = projector
        self.config.vision_adapter_width = None

    def reconfigure_projector(self, projector_options: dict) -> None:
        """Change options of the model's own projector, keeping what it learned: the options are merged over the
        current ones and must leave every weight's shape as it is (``pool`` of ``pixel_shuffle_mlp``), except a
        coarser ``downsample_ratio`` of ``pixel_shuffle_mlp`` (0.5 -> 0.25: 4x4 patches a token), whose wider weights
        start from the trained ones (`PixelShuffleMLPProjector.load_widened`)."""
        options = {**self.config.projector_options, **projector_options}
        old = self.own_projector
        try:
            new = build_projector(self.config.projector_type, self.projector_width,
                                  self.config.text_config.hidden_size, **options)
        except (TypeError, ValueError) as err:
            raise ModelConfigError(
                f"projector_options {projector_options} for the model's own projector: {err}") from None
        old_state, new_state = old.state_dict(), new.state_dict()
        changed = sorted(k for k in old_state.keys() | new_state.keys()
                         if k not in old_state or k not in new_state or old_state[k].shape != new_state[k].shape)
        widen = bool(changed) and isinstance(new, PixelShuffleMLPProjector) \
            and isinstance(old, PixelShuffleMLPProjector) and new.factor != old.factor
        if widen and new.factor % old.factor:
            raise ModelConfigError(
                f"projector_options {projector_options}: the trained pixel shuffle's downsample_ratio "
                f"{old.downsample_ratio} can only be made coarser by a whole factor (0.5 -> 0.25, 0.125), "
                f"not {new.downsample_ratio}; name a projector to start a fresh one")
        if changed and not widen:
            raise ModelConfigError(
                f"projector_options {projector_options} change the {self.config.projector_type} weights' shapes "
                f"({', '.join(changed[:4])}), so the trained ones cannot be kept; name a projector to start a fresh one"
            )
        self._check_projector_grid(new, self.config.projector_type)  # before anything of the model is replaced
        if widen:
            new.load_widened(old)
        else:
            new.load_state_dict(old_state, strict=True)
        reference = next(old.parameters(), None)
        if reference is not None:
            new = new.to(device=reference.device, dtype=reference.dtype)
        if isinstance(self.multi_modal_projector, AdaptedProjector):
            new = AdaptedProjector(self.multi_modal_projector.adapter, new)
        self.multi_modal_projector = new
        self.config.projector_options = options

    def replace_vision_tower(self, tower: nn.Module, tiling: TilingConfig | None = None,
                             adapter: nn.Linear | None = None) -> None:
        """Put `tower` in place of the vision tower and record its config (and, given its `tiling`, its tile size
        and normalisation). With `adapter` (a distilled tower's projection into the feature space the projector was
        trained on: `adapter_fits`), the trained projector stays behind it; otherwise a tower of another width or
        patch grid gets a freshly initialised projector of the same type, since the old one cannot read its
        features."""
        old = self.config.vision_config
        if adapter is not None and not self.adapter_fits(tower, adapter):
            raise ModelConfigError(
                f"vision adapter {adapter.in_features} -> {adapter.out_features} does not fit: the tower is "
                f"{tower.config.hidden_size} wide, the projector reads {self.projector_width}-wide features of a "
                f"{patch_grid(old)} grid (the tower's is {patch_grid(tower.config)})")
        width = self.projector_width  # what the projector reads, before the config takes the new tower's
        reference = next(self.vision_tower.parameters(), None)
        if reference is not None:
            tower = tower.to(device=reference.device, dtype=reference.dtype)
        self.vision_tower = tower
        self.config.vision_config = tower.config
        if adapter is not None:
            projector = self.own_projector
            weights = next(projector.parameters(), reference)
            if weights is not None:
                adapter = adapter.to(device=weights.device, dtype=weights.dtype)
            self.multi_modal_projector = AdaptedProjector(adapter, projector)
            self.config.vision_adapter_width = adapter.out_features
        elif tower.config.hidden_size != width or patch_grid(tower.config) != patch_grid(old):
            self.replace_projector(self.config.projector_type, self.config.projector_options)
        else:  # the projector reads this tower's features as they are: an earlier tower's adapter goes
            self.multi_modal_projector = self.own_projector
            self.config.vision_adapter_width = None
        if tiling is not None:
            self.config.tiling = dataclasses.replace(
                self.config.tiling_config, tile_size=tiling.tile_size, mean=tiling.mean, std=tiling.std).to_dict()

    def adapter_fits(self, tower: nn.Module, adapter: nn.Linear, feature_layer: int | None = None) -> bool:
        """Whether `adapter` maps `tower`'s features into the ones the projector reads (width and patch grid, and,
        given the `vision_feature_layer` it was distilled for, that layer)."""
        return (adapter.in_features == tower.config.hidden_size and adapter.out_features == self.projector_width
                and patch_grid(tower.config) == patch_grid(self.config.vision_config)
                and feature_layer in (None, self.config.vision_feature_layer))

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(tiles, tokens_per_tile, text_hidden)` features for a flat batch of tiles."""
        pixel_values = pixel_values.to(dtype=self.vision_tower.dtype)
        features = select_features(self.vision_tower, pixel_values, self.config.vision_feature_layer)
        return self.multi_modal_projector(features)

    def embed(
        self, input_ids: torch.LongTensor, pixel_values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text embeddings with image features written over the image-context positions.

        Image-context ids are never looked up in the embedding table, so a tokenizer may carry the
        token beyond the LLM's vocabulary (MobileVLM) without resizing it.
        """
        image_mask = input_ids == self.config.image_token_id
        embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
        n_tokens = int(image_mask.sum())
        if pixel_values is None or pixel_values.shape[0] == 0:
            if n_tokens:
                raise ImageTokenMismatchError(
                    f"the input holds {n_tokens} image tokens but no pixel_values were given"
                )
            return embeds, None
        features = self.get_image_features(pixel_values)
        n_features = features.shape[0] * features.shape[1]
        if n_tokens != n_features:
            token = f"image_token_id {self.config.image_token_id} ({self.config.image_context_token})"
            cause = (f"The prompt was encoded for other image tokens (a tokenizer whose "
                     f"{self.config.image_context_token} is not id {self.config.image_token_id}, another tiling, or "
                     f"other than {features.shape[1]} "
                     "tokens per tile): encode it with this model's processor.")
            if n_tokens < n_features:  # more tokens than features is never a cut
                cause = ("A sequence was probably truncated inside its image tokens; drop such samples instead of "
                         "truncating them. Or: " + cause[0].lower() + cause[1:])
            raise ImageTokenMismatchError(
                f"image tokens and image features disagree: {n_tokens} tokens of {token} in input_ids, "
                f"{n_features} features ({features.shape[0]} tiles x {features.shape[1]}). {cause}"
            )
        embeds = embeds.masked_scatter(image_mask.unsqueeze(-1), features.to(embeds.dtype))
        return embeds, features

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        loss_only: bool = False,
        **kwargs,
    ) -> VLMOutput:
        """`kwargs` (the KV cache, `use_cache`, output flags) go to the LLM under the names the
        installed transformers uses; the output's fields are the LLM's own plus the image features.

        With `labels` and `loss_only` (training) the output carries `token_losses` (next-token
        cross-entropy per position, see `model.loss.supervised_token_losses`) and `loss` (their mean
        over supervised tokens) and no logits: large vocabularies are projected at supervised positions
        only. With `labels` alone it is the LLM's own output, logits and loss. Packed rows (several
        samples, `position_ids` restarting at 0 and no `attention_mask`) attend within each sample."""
        image_features = None
        if inputs_embeds is None:
            inputs_embeds, image_features = self.embed(input_ids, pixel_values)
        if attention_mask is None and _restarts(position_ids) and not {"past_key_values", "cache"} & kwargs.keys():
            # transformers reads packed samples off position_ids only when there is no KV cache, and a causal LM
            # makes one by default: with it every sample would attend to the ones before it in its row
            if kwargs.setdefault("use_cache", False):
                raise ValueError("packed rows (position_ids restarting within a row, no attention_mask) cannot "
                                 "use a KV cache: its samples would attend to each other; leave use_cache unset")
        if labels is not None and loss_only:
            return self._supervised_forward(inputs_embeds, attention_mask, position_ids, labels, image_features, kwargs)
        out = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        # only the fields a causal-LM output has: MoE LMs add router outputs (their aux loss is already in `loss`)
        kept = {name: value for name, value in out.items() if name in _VLM_OUTPUT_FIELDS}
        return VLMOutput(**kept, image_hidden_states=image_features)

    def _supervised_forward(self, inputs_embeds, attention_mask, position_ids, labels, image_features,
                            kwargs: dict) -> VLMOutput:
        kwargs.setdefault("use_cache", False)
        lm = self.language_model
        if self.config.text_config.model_type in _PLAIN_HEAD_LMS and lm.base_model is not lm:
            out = lm.base_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                position_ids=position_ids, **kwargs)
            hidden, head = out.last_hidden_state, lm.get_output_embeddings()
        else:  # the LM's own logits, whatever it does to them; still taken at supervised positions only
            out = lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
            hidden, head = out.logits, nn.Identity()
        losses = supervised_token_losses(hidden, head, labels)
        loss = losses.sum() / (labels[:, 1:] != IGNORE_INDEX).sum().clamp(min=1)
        # a MoE LM asked for router logits (output_router_logits) adds its load-balancing loss to its own loss, as
        # transformers does; without it the experts' routing collapses while fine-tuning
        aux = getattr(out, "aux_loss", None)
        router = None
        if aux is not None:
            router = getattr(self.config.text_config, "router_aux_loss_coef", 0.0) * aux.float()
            loss = loss + router
        return VLMOutput(loss=loss, token_losses=losses, image_hidden_states=image_features, router_loss=router)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **generate_kwargs,
    ) -> torch.LongTensor:
        """Generate with the LLM's own `generate` (KV cache included); returns the new tokens only.

        Where the rows of a left-padded batch all begin with the same text tokens (the chat template's system prompt),
        that prefix runs once and its KV cache is shared by every row (`_shared_prefix`): the same answers, less
        prefill."""
        inputs_embeds, _ = self.embed(input_ids, pixel_values)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        shared = self._shared_prefix(input_ids, inputs_embeds, attention_mask, generate_kwargs)
        if shared is not None:
            inputs_embeds, attention_mask, generate_kwargs = shared
        return self.language_model.generate(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, **generate_kwargs
        )

    def _shared_prefix(self, input_ids: torch.LongTensor, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                       generate_kwargs: dict) -> tuple[torch.Tensor, torch.Tensor, dict] | None:
        """The batch rearranged to share its rows' common text prefix, or None where nothing is shared.

        The prefix (up to the first image token or the first token where rows differ, and never a row's last token)
        runs once, for one row; its KV cache, repeated for every row, goes to `generate` with each row laid out as
        prefix, padding, rest. The positions come from the attention mask (padding takes none), so every token keeps
        its position and attends to what it did. Only greedy or sampled search over a plain full-attention cache of
        the LLM's own making is rearranged: beams, a caller's cache or another cache layout are left as they were."""
        rows, length = input_ids.shape
        lm = self.language_model
        if rows < 2 or {"past_key_values", "cache", "cache_implementation", "generation_config",
                        "position_ids"} & generate_kwargs.keys():
            return None
        if not type(lm).__module__.startswith("transformers."):  # remote code: its own cache and argument names
            return None
        config = lm.generation_config
        if (generate_kwargs.get("num_beams") or config.num_beams or 1) != 1 \
                or (generate_kwargs.get("num_return_sequences") or config.num_return_sequences or 1) != 1 \
                or generate_kwargs.get("use_cache", config.use_cache) is False:
            return None
        mask = attention_mask.bool()
        starts = length - mask.sum(1)
        positions = torch.arange(length, device=input_ids.device)
        if not torch.equal(mask, positions >= starts[:, None]):  # not left padded
            return None
        common = int(length - starts.max()) - 1  # each row keeps a token to prefill: its logits give the first answer
        if common < _MIN_SHARED_PREFIX:
            return None
        aligned = input_ids.gather(1, starts[:, None] + positions[:common])
        # an image token stands for each row's own features: the prefix ends before the first
        same = (aligned == aligned[:1]).all(0) & (aligned[0] != self.config.image_token_id)
        shared = int(same.long().cumprod(0).sum())
        if shared < _MIN_SHARED_PREFIX:
            return None
        cache = DynamicCache(config=lm.config)
        if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):  # sliding, linear...
            return None
        first = int(starts[0])
        lm(inputs_embeds=inputs_embeds[:1, first:first + shared], use_cache=True, **{_CACHE_KWARG: cache},
           **({"logits_to_keep": 1} if lm._supports_logits_to_keep() else {}))
        cache.batch_repeat_interleave(rows)
        order = torch.stack([torch.cat([positions[s:s + shared], positions[:s], positions[s + shared:]])
                             for s in starts.tolist()])
        inputs_embeds = inputs_embeds.gather(1, order[..., None].expand(-1, -1, inputs_embeds.shape[-1]))
        attention_mask = attention_mask.gather(1, order)
        # given, not left to `generate`, which derives them only where the LM's forward names position_ids (a wrapped
        # forward may not): positions counted from the start would move each row's rest by its padding
        position_ids = (attention_mask.long().cumsum(1) - 1).masked_fill(attention_mask == 0, 0)
        return inputs_embeds, attention_mask, {**generate_kwargs, _CACHE_KWARG: cache, "position_ids": position_ids}


def _restarts(position_ids: torch.Tensor | None) -> bool:
    """Whether some row of 2-D `position_ids` starts a new sequence after its first position (a packed row)."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[1] < 2:
        return False
    return bool((position_ids[:, 1:] != position_ids[:, :-1] + 1).any())


AutoConfig.register(PocketVLMConfig.model_type, PocketVLMConfig, exist_ok=True)
AutoModelForImageTextToText.register(PocketVLMConfig, PocketVLM, exist_ok=True)
