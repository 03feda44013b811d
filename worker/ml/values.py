"""The policy, its frozen reference and the value function, all on ONE backbone.

``LoraPolicy`` holds the policy and its reference (what RLOO/GRPO need: rloo.py);
``PolicyValue`` adds PPO's value function to it.

Policy    = backbone + LoRA adapter "default" (the only weights PPO changes in the LM).
Reference = the same backbone inside ``peft_model.disable_adapter()``: the logits are identical
            to a separately loaded base (docs/measured-facts.md, "The PPO reference";
            re-checked in tests/ml/test_ppo.py), so no second copy is held.
Value     = a scalar head (zero-initialised ``Linear(hidden, 1)``) on the final hidden state.

Which hidden state the value head reads is ``value_mode``:

``"shared"`` (default) - the policy's own forward. One forward gives logits and values; the
    value loss (scaled by ``vf_coef``) also trains the policy adapter. This is the layout of
    OpenAI's lm-human-preferences (a ``value`` scalar head on the policy trunk) and costs a
    ``hidden_size + 1`` parameter head, nothing else.
``"adapter"`` - a second LoRA adapter "value" on the same frozen backbone plus its own head,
    so value gradients never touch the policy adapter (the decoupling InstructGPT gets from a
    separate value model) without a second copy of the weights. It costs a second forward in
    every rollout and a second forward+backward in every minibatch.

Not chosen: a LoRA'd copy of the reward model (InstructGPT initialises value from the RM). The
RM here may be any callable, and even with an RM folder it means holding another full backbone;
the four-model baseline in bench/ppo_memory.py shows what separate backbones cost.

What each layout costs in peak memory and step time, measured against four separate models:
docs/benchmarks.md, "PPO: one shared backbone vs four models".

Logprobs are computed from ``lm_head(final hidden)`` for response positions only (the full
vocabulary projection over prompt tokens is never materialised); ``check_head_matches`` guards
architectures where logits are not a plain projection of the last hidden state.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from worker.ml.batching import position_ids
from worker.ml.ppo_config import VALUE_MODES

POLICY_ADAPTER = "default"
VALUE_ADAPTER = "value"


class ValueHead(nn.Module):
    """hidden [B, T, H] -> value [B, T]; zero-initialised so the first values are 0."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.score = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.score(hidden.float()).squeeze(-1)


class LoraPolicy(nn.Module):
    """A peft model: the policy (its adapter) and the reference (adapters disabled)."""

    def __init__(self, peft_model):
        super().__init__()
        self.peft_model = peft_model

    # --- the pieces of the backbone ------------------------------------------------------------

    @property
    def causal_lm(self):
        return self.peft_model.get_base_model()

    def _trunk_hidden(self, input_ids, attention_mask) -> torch.Tensor:
        """Final (normed) hidden states [B, L, H] of whatever adapter state is active."""
        trunk = self.causal_lm.base_model
        out = trunk(
            input_ids=input_ids,
            attention_mask=attention_mask,
            # as generate() assigns them: else left-padded rows would not get the sampled logprobs
            position_ids=position_ids(attention_mask),
            use_cache=False,
        )
        return out.last_hidden_state

    def _response_logits(self, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
        # Temperature-scaled, exactly as sampling scaled them: the logprobs PPO and RLOO use
        # must be those of the distribution the tokens were drawn from.
        # fp32 even under autocast: bf16 logits would add noise of ~1e-2 to every log-ratio.
        head = self.causal_lm.get_output_embeddings()
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            if type(head) is not nn.Linear:  # e.g. LoRA on lm_head: use its own forward
                logits = head(hidden.to(head.weight.dtype)).float()
            else:
                bias = None if head.bias is None else head.bias.float()
                logits = F.linear(hidden.float(), head.weight.float(), bias)
            return soft_cap(logits, self.causal_lm.config) / temperature

    # --- what the policy-gradient stages call ----------------------------------------------------

    def policy_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_context: int, temperature: float
    ) -> torch.Tensor:
        """Policy logits [B, T, V] for the T response tokens after ``n_context`` prompt tokens."""
        hidden = self._trunk_hidden(input_ids, attention_mask)[:, n_context - 1 : -1]  # [B, T, H]
        return self._response_logits(hidden, temperature)

    def reference_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_context: int, temperature: float
    ) -> torch.Tensor:
        """Logits [B, T, V] of the frozen reference: the same backbone with adapters off."""
        with self.peft_model.disable_adapter():
            hidden = self._trunk_hidden(input_ids, attention_mask)[:, n_context - 1 : -1]
            return self._response_logits(hidden, temperature)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


class PolicyValue(LoraPolicy):
    """A peft model (policy adapter + optional value adapter) and the value head."""

    def __init__(self, peft_model, value_mode: str = "shared", value_lora_config=None):
        if value_mode not in VALUE_MODES:
            raise ValueError(f"value_mode must be one of {VALUE_MODES}, got {value_mode!r}")
        super().__init__(peft_model)
        self.value_mode = value_mode
        causal_lm = peft_model.get_base_model()
        self.value_head = ValueHead(causal_lm.config.hidden_size).to(causal_lm.device)
        if value_mode == "adapter":
            peft_model.add_adapter(VALUE_ADAPTER, value_lora_config)
            self._use_adapter(POLICY_ADAPTER)

    def _use_adapter(self, name: str) -> None:
        # peft's set_adapter freezes every inactive adapter; both of ours keep training.
        self.peft_model.set_adapter(name)
        for param_name, param in self.peft_model.named_parameters():
            if "lora_" in param_name:
                param.requires_grad_(True)

    @contextmanager
    def _value_adapter(self) -> Iterator[None]:
        self._use_adapter(VALUE_ADAPTER)
        try:
            yield
        finally:
            self._use_adapter(POLICY_ADAPTER)

    # --- what PPO calls --------------------------------------------------------------------------

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_context: int, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Policy logits [B, T, V] for the T response tokens after ``n_context`` prompt tokens,
        and in "shared" mode their values [B, T] (None in "adapter" mode: call ``values``)."""
        hidden = self._trunk_hidden(input_ids, attention_mask)[:, n_context - 1 : -1]  # [B, T, H]
        values = self.value_head(hidden) if self.value_mode == "shared" else None
        return self._response_logits(hidden, temperature), values

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_context: int) -> torch.Tensor:
        """Values [B, T] of the response tokens (either mode)."""
        if self.value_mode == "shared":
            hidden = self._trunk_hidden(input_ids, attention_mask)
        else:
            with self._value_adapter():
                hidden = self._trunk_hidden(input_ids, attention_mask)
        return self.value_head(hidden[:, n_context - 1 : -1])


def soft_cap(logits: torch.Tensor, config) -> torch.Tensor:
    """Gemma 2 squashes its logits into (-cap, cap) as cap * tanh(logits / cap) (its config's
    final_logit_softcapping); sampling sees the capped logits, so PPO's logprobs must too."""
    cap = getattr(config, "final_logit_softcapping", None)
    return logits if not cap else cap * torch.tanh(logits / cap)


def check_head_matches(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """Raise unless ``soft_cap(lm_head(trunk(x)))`` reproduces the model's own logits (it does
    not for architectures that rescale logits otherwise, which PPO and RLOO do not support)."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    with torch.no_grad():
        own = causal_lm(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask)
        ).logits
        hidden = causal_lm.base_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask)
        ).last_hidden_state
        ours = soft_cap(causal_lm.get_output_embeddings()(hidden), causal_lm.config)
    if not torch.allclose(own.float(), ours.float(), atol=1e-4, rtol=1e-4):
        raise ValueError(
            f"{type(causal_lm).__name__}: logits are not lm_head(last hidden state); "
            "PPO and RLOO support plain decoder LMs (Llama, Qwen, Gemma, Mistral, Phi-3, GPT-2 style)"
        )
