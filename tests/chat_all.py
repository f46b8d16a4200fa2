"""One pass over every input kind, through the native path and through chat(); imported by the fresh-process
test, so it imports nothing from the repository."""

GEN = dict(max_new_tokens=4, do_sample=False)
QUESTIONS = {"image": "describe the picture", "images": "what is different", "video": "what happens", "text": "hello"}


def messages_for(kind, media, num_frames=8):
    """transformers' message format for one input kind."""
    items = {
        "image": [{"type": "image", "path": media["wide"]}],
        "images": [{"type": "image", "path": media["wide"]}, {"type": "image", "path": media["square"]}],
        "video": [{"type": "video", "path": media["video"], "num_frames": num_frames}],
        "text": [],
    }[kind]
    return [{"role": "user", "content": items + [{"type": "text", "text": QUESTIONS[kind]}]}]


def chat_question(kind, inputs):
    """The official chat() question for the same sample (placeholders as the chat template renders them)."""
    if kind == "images":
        return "Image-1: <image>\nImage-2: <image>\n" + QUESTIONS[kind]
    if kind == "video":
        frames = len(inputs["num_patches_list"][0])
        return "".join(f"Frame{i + 1}: <image>\n" for i in range(frames)) + QUESTIONS[kind]
    if kind == "image":
        return "<image>\n" + QUESTIONS[kind]
    return QUESTIONS[kind]


def run_all(model, tokenizer, processor, media):
    """Native (apply_chat_template + generate) and chat() answers for every kind, plus a mixed batch."""
    out = {}
    for kind in ("image", "images", "video", "text"):
        inputs = processor.apply_chat_template(
            messages_for(kind, media), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        ).to(model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        ids = model.generate(**inputs, **GEN)
        out[kind + "_native"] = ids.tolist()
        pixel_values = inputs.get("pixel_values")
        layout = {}
        if pixel_values is not None:
            layout = dict(data_flag=inputs["data_flag"], num_patches_list=inputs["num_patches_list"][0])
        out[kind] = model.chat(tokenizer, pixel_values, chat_question(kind, inputs), dict(GEN), **layout)
        out[kind + "_native_text"] = processor.decode_answers(ids[:, inputs["input_ids"].shape[1]:])[0]
        out[kind + "_tiles"] = inputs["num_patches_list"][0] if pixel_values is not None else []
    image = processor.apply_chat_template(messages_for("image", media), add_generation_prompt=True, tokenize=True,
                                          return_dict=True)
    video = processor.apply_chat_template(messages_for("video", media), add_generation_prompt=True, tokenize=True,
                                          return_dict=True)
    batch = processor.apply_chat_template([messages_for("image", media), messages_for("video", media)],
                                          add_generation_prompt=True, tokenize=True, return_dict=True)
    batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    prompt_length = batch["input_ids"].shape[1]
    out["batch_native"] = processor.decode_answers(model.generate(**batch.to(model.device), **GEN)[:, prompt_length:])
    out["batch"] = model.batch_chat(
        tokenizer, batch["pixel_values"], [chat_question("image", image), chat_question("video", video)], dict(GEN),
        num_patches_list=batch["num_patches_list"], data_flag=batch["data_flag"], split_sizes=batch["split_sizes"],
    )
    return out
