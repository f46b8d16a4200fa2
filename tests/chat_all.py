"""One pass over every chat mode; imported by the fresh-process test, so it imports nothing from the repo."""

GEN = dict(max_new_tokens=4, do_sample=False)


def run_all(model, tokenizer, processor, media) -> dict:
    """chat for data_flag 1, 2, 3 and batch_chat for an image + a video question."""
    single = processor(text="describe the picture", images=[media["wide"]])
    double = processor(text="what is different", images=[media["wide"], media["square"]])
    video = processor(text="what happens", videos=media["video"], num_segments=8)
    out = {}
    for name, sample in (("image", single), ("images", double), ("video", video)):
        out[name] = model.chat(
            tokenizer, sample["pixel_values"], sample["question"], dict(GEN),
            data_flag=sample["data_flag"], num_patches_list=sample["num_patches_list"],
        )
        out[name + "_tiles"] = list(sample["num_patches_list"])
    batch = processor.collate([single, video])
    out["batch"] = model.batch_chat(
        tokenizer, batch["pixel_values"], batch["questions"], dict(GEN),
        num_patches_list=batch["num_patches_list"], data_flag=batch["data_flag"], split_sizes=batch["split_sizes"],
    )
    return out
