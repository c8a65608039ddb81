"""Molmo2's processor: chat template, BOS, and each `<|image|>` expanded into the image's token block.

Token block of one image (the released options; vLLM 0.24's `get_image_replacement_molmo2` builds the same):

    <low_res_im_start> (<im_patch> * rw) * rh <im_end>          global view (no <im_col>: single-crop col tokens off)
    <im_start> (<im_patch> * w <im_col>) * h <im_end>           crops (<im_col> ends each row)

In rollout vLLM expands the placeholders itself (reading the option attributes below from this processor); in
training this processor does. The two must agree token for token, or the trainer's log-probs are not the
rollout's. Text is tokenized around the placeholders and the image blocks are spliced in as ids, which equals
tokenizing the whole prompt: added tokens always split the text before byte-level pre-tokenization.
"""
from collections.abc import Sequence

import torch
from transformers import AutoProcessor, BatchFeature, ProcessorMixin
# transformers exports a torchvision-gated placeholder at top level; the class itself needs no torchvision.
from transformers.models.auto.image_processing_auto import AutoImageProcessor

from .image_processing import Molmo2ImageProcessor, flatten_images

IMAGE_PLACEHOLDER = "<|image|>"
VIDEO_PLACEHOLDER = "<|video|>"


class Molmo2Processor(ProcessorMixin):
    """Tokenizer + Molmo2ImageProcessor; returns `input_ids`, `attention_mask` and the four image tensors."""

    # vLLM's Molmo2 reads `video_processor` unconditionally; videos are not supported here.
    video_processor = None

    def __init__(
        self,
        image_processor: Molmo2ImageProcessor | None = None,
        tokenizer=None,
        chat_template: str | None = None,
        image_use_col_tokens: bool = True,
        use_single_crop_col_tokens: bool | None = False,
        use_single_crop_start_token: bool = True,
        video_use_col_tokens: bool = False,
        use_frame_special_tokens: bool = True,
    ) -> None:
        # The released options, read by vLLM's Molmo2 processing to build the same token layout.
        self.image_use_col_tokens = image_use_col_tokens
        self.use_single_crop_col_tokens = use_single_crop_col_tokens
        self.use_single_crop_start_token = use_single_crop_start_token
        self.video_use_col_tokens = video_use_col_tokens
        self.use_frame_special_tokens = use_frame_special_tokens
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    def token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {token!r} token: it is not Molmo2's")
        return token_id

    def image_token_ids(self, grid: tuple[int, int, int, int]) -> list[int]:
        """Token ids replacing one `<|image|>`, for its grid (rh, rw, h, w)."""
        rh, rw, h, w = (int(x) for x in grid)
        patch, col, end = self.token_id("<im_patch>"), self.token_id("<im_col>"), self.token_id("<im_end>")
        start = self.token_id("<im_start>")
        low_res_start = self.token_id("<low_res_im_start>") if self.use_single_crop_start_token else start
        low_res_cols = self.image_use_col_tokens if self.use_single_crop_col_tokens is None else self.use_single_crop_col_tokens
        low_res_row = [patch] * rw + [col] * int(low_res_cols)
        high_res_row = [patch] * w + [col] * int(self.image_use_col_tokens)
        return [low_res_start] + low_res_row * rh + [end] + [start] + high_res_row * h + [end]

    def num_image_tokens(self, height: int, width: int) -> int:
        """Length of the token block of an image of `height` x `width` pixels (after EXIF orientation)."""
        return len(self.image_token_ids(self.image_processor.image_grid(height, width)))

    def __call__(
        self,
        images: object = None,
        text: str | list[str] | None = None,
        videos: object = None,
        audio: object = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Tokenize prompts and process their images.

        `text`: one prompt or a list; each `<|image|>` takes the next image (images as one flat list in prompt
        order, or one list per prompt). `images=None` tokenizes the text as written, each `<|image|>` one token
        (vLLM's text-only call); any other value must hold exactly one image per placeholder. The BOS `<|im_end|>`
        is prepended unless the prompt starts with it (the released processor does; so does vLLM). Several prompts
        are right-padded with the pad token.
        Returns torch tensors: `input_ids`, `attention_mask` [B, T] and, with images, `pixel_values`,
        `image_token_pooling`, `image_grids`, `image_num_crops` (see image_processing.py).
        """
        if videos or audio:
            raise ValueError("Molmo2Processor here supports images only, not videos or audio")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"Molmo2Processor returns torch tensors, got return_tensors={return_tensors!r}")
        unknown = set(kwargs) - _IGNORED_TEXT_KWARGS
        if unknown:
            raise TypeError(f"Molmo2Processor got unexpected arguments {sorted(unknown)}")
        if kwargs.get("truncation"):
            raise ValueError("Molmo2Processor does not truncate: it could cut an image's token block")
        if text is None:
            raise ValueError("Molmo2Processor needs the prompt text (use the chat template to place <|image|>)")
        prompts = [text] if isinstance(text, str) else list(text)
        if any(VIDEO_PLACEHOLDER in prompt for prompt in prompts):
            raise ValueError(f"Molmo2Processor here supports images only: a prompt has {VIDEO_PLACEHOLDER}")
        flat_images = flatten_images(images)
        # images=None: the text is tokenized as written, each <|image|> one token: vLLM calls the processor so
        # (its text-only path) and expands the placeholders itself.
        if images is not None:
            self._check_placeholders(prompts, images, flat_images)

        outputs = {}
        grids: list = []
        if flat_images:
            outputs = dict(self.image_processor(flat_images))
            grids = outputs["image_grids"].tolist()
        bos = self.tokenizer.bos_token or self.tokenizer.eos_token
        sequences, next_image = [], 0
        for prompt in prompts:
            if not prompt.startswith(bos):
                prompt = bos + prompt
            pieces = prompt.split(IMAGE_PLACEHOLDER) if flat_images else [prompt]
            ids = self.tokenizer(pieces[0], add_special_tokens=False)["input_ids"]
            for piece in pieces[1:]:
                ids += self.image_token_ids(grids[next_image])
                ids += self.tokenizer(piece, add_special_tokens=False)["input_ids"]
                next_image += 1
            sequences.append(ids)

        length = max(len(ids) for ids in sequences)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([ids + [pad] * (length - len(ids)) for ids in sequences], dtype=torch.long)
        attention_mask = torch.tensor([[1] * len(ids) + [0] * (length - len(ids)) for ids in sequences], dtype=torch.long)
        return BatchFeature({"input_ids": input_ids, "attention_mask": attention_mask, **outputs})

    def image_inputs(self, input_ids: Sequence[int], images: list) -> dict[str, torch.Tensor]:
        """The image tensors of a sequence whose image blocks are already in place (a rollout step's tokens).

        What `__call__` returns besides the token ids, computed from `images` alone, so the ids are never
        decoded and re-tokenized. Each image's block (`image_token_ids` of its grid) must appear in
        `input_ids` in image order, and no other block may: a ValueError names the first image that does not.
        """
        outputs = dict(self.image_processor(flatten_images(images)))
        ids, position = list(input_ids), 0
        grids = outputs["image_grids"].tolist()
        for index, grid in enumerate(grids):
            block = self.image_token_ids(grid)
            try:
                start = ids.index(block[0], position)
            except ValueError:
                raise ValueError(f"the token ids hold fewer image blocks than the {len(grids)} image(s) given: "
                                 f"none for image {index}") from None
            if ids[start : start + len(block)] != block:
                raise ValueError(f"image {index}'s block in the token ids (at {start}) is not the one its "
                                 f"{grid[2]}x{grid[3]} crop grid gives: not the image the prompt was built from")
            position = start + len(block)
        if self.image_token_ids((1, 1, 1, 1))[0] in ids[position:]:
            raise ValueError(f"the token ids hold more image blocks than the {len(grids)} image(s) given")
        return outputs

    @staticmethod
    def _check_placeholders(prompts: list[str], images: object, flat_images: list) -> None:
        """One ValueError when placeholders and images do not pair up (per prompt when images are nested)."""
        missing = [i for i, image in enumerate(flat_images) if image is None]
        if missing:
            raise ValueError(
                f"image(s) {missing} are None: each {IMAGE_PLACEHOLDER} needs a PIL image, a uint8 array or a local "
                "path (pass images=None for text only)"
            )
        counts = [prompt.count(IMAGE_PLACEHOLDER) for prompt in prompts]
        per_prompt = isinstance(images, (list, tuple)) and len(images) == len(prompts) and len(prompts) > 1
        if per_prompt and all(isinstance(item, (list, tuple)) for item in images):
            for i, (count, sample_images) in enumerate(zip(counts, images)):
                if count != len(sample_images):
                    raise ValueError(
                        f"prompt {i} has {count} {IMAGE_PLACEHOLDER} placeholder(s) but {len(sample_images)} image(s)"
                    )
        if sum(counts) != len(flat_images):
            raise ValueError(
                f"the prompt(s) have {sum(counts)} {IMAGE_PLACEHOLDER} placeholder(s) but {len(flat_images)} image(s) "
                "were given: one image per placeholder"
            )

    def apply_chat_template(self, conversation: list | list[list], *args, **kwargs):
        """The released template; it has no system role, so a system message is refused here, clearly."""
        conversations = conversation if conversation and isinstance(conversation[0], (list, tuple)) else [conversation]
        for messages in conversations:
            if any(message.get("role") == "system" for message in messages):
                raise ValueError(
                    "Molmo2's chat template has no system role: put the system text into the first user message"
                )
        return super().apply_chat_template(conversation, *args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask"] + self.image_processor.model_input_names


# Tokenizer options callers pass through (vLLM, verl); the processor's own behaviour already fixes them.
_IGNORED_TEXT_KWARGS = {
    "padding", "truncation", "max_length", "add_special_tokens", "return_attention_mask", "return_mm_token_type_ids",
}


def register_processor(config_class: type) -> None:
    """Make Auto{Image}Processor pick our classes for `config_class` and by name (idempotent).

    Registered by name, the released preprocessor_config.json's "Molmo2ImageProcessor"/"Molmo2Processor"
    resolve to these local classes, which transformers prefers over the config's `auto_map` remote code.
    """
    AutoImageProcessor.register(
        config_class,
        image_processor_classes={"pil": Molmo2ImageProcessor, "torchvision": Molmo2ImageProcessor},
        exist_ok=True,
    )
    AutoProcessor.register(config_class, Molmo2Processor, exist_ok=True)
