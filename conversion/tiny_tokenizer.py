"""A tiny offline tokenizer carrying the InternVL2 special tokens, for tests and the demo checkpoint
(``scripts/make_demo_checkpoint.py``).

`make_tiny_tokenizer(save_dir)` builds a `tokenizers` WordLevel tokenizer (vocab < 512), wraps it in a
`PreTrainedTokenizerFast`, saves it with `save_pretrained` and returns it. The saved folder loads through
`AutoTokenizer.from_pretrained(save_dir)` offline.

Pre-tokenisation keeps "\\n", every CJK character, every digit and every punctuation character as its
own token; runs of other letters form one word. Words outside the vocabulary become `<unk>`. `<s>` is
prepended to every encoded sequence; `</s>` is the pad token.
"""

from __future__ import annotations

import os

from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from conversion.package import remote_module

_conversation = remote_module("conversation")
UNK_TOKEN, BOS_TOKEN, EOS_TOKEN = "<unk>", "<s>", "</s>"
IM_START_TOKEN, IM_END_TOKEN = "<|im_start|>", "<|im_end|>"
IMG_START_TOKEN, IMG_END_TOKEN = _conversation.IMG_START_TOKEN, _conversation.IMG_END_TOKEN
IMG_CONTEXT_TOKEN = _conversation.IMG_CONTEXT_TOKEN

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
PAD_ID = EOS_ID
IM_START_ID, IM_END_ID = 3, 4
IMG_START_ID, IMG_END_ID, IMG_CONTEXT_ID = 5, 6, 7
QUAD_START_ID, QUAD_END_ID = 8, 9
REF_START_ID, REF_END_ID = 10, 11
BOX_START_ID, BOX_END_ID = 12, 13
NEWLINE_ID = 14

SPECIAL_TOKENS: dict[str, int] = {
    UNK_TOKEN: UNK_ID,
    BOS_TOKEN: BOS_ID,
    EOS_TOKEN: EOS_ID,
    IM_START_TOKEN: IM_START_ID,
    IM_END_TOKEN: IM_END_ID,
    IMG_START_TOKEN: IMG_START_ID,
    IMG_END_TOKEN: IMG_END_ID,
    IMG_CONTEXT_TOKEN: IMG_CONTEXT_ID,
    "<quad>": QUAD_START_ID,
    "</quad>": QUAD_END_ID,
    "<ref>": REF_START_ID,
    "</ref>": REF_END_ID,
    "<box>": BOX_START_ID,
    "</box>": BOX_END_ID,
}

# The InternVL2 default system message (pvc.md §7.2); its characters are in the vocabulary.
SYSTEM_MESSAGE = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)

_WORDS = """
a an the this that these those it its is are was were be been being am do does did done have has had
i you he she we they me him her us them my your his our their what which who whom whose when where why
how all any both each few more most other some such no nor not only own same so than too very can will
just should now and but or if because as until while of at by for with about against between into
through during before after above below to from up down in out on off over under again further then
once here there one two three four five six seven eight nine ten first second third last next left
right top bottom middle image images picture photo video videos frame frames clip scene describe
description detail details detailed please answer question questions briefly short long word words
sentence option options choose correct best letter given following color colour red green blue yellow
black white grey gray orange purple pink brown dark light man woman person people child boy girl dog
cat car bus tree house room table chair book phone computer screen sky water road street city field
text title number count many much how large small big little tall wide high low hot cold new old good
bad happy sad doing holding sitting standing walking running playing looking wearing eating reading
writing happening happens happened show shows shown see seen look looks like there action actions move
moving moved object objects background foreground front behind side inside outside near far time
times during start end begin beginning finally yes maybe true false hello hi thanks thank assistant
user system human model answer response chart table document page line lines box boxes region area
Frame Image Video Question Answer Options Option Please Describe What Which Who How Is Are The A An
Yes No Hello InternVL PVC A B C D E F
""".split()

_PUNCTUATION = list(".,:;!?'\"()[]{}<>-_/\\|@#$%^&*+=~`") + ["，", "。", "：", "？", "！"]
_DIGITS = [str(d) for d in range(10)]

# One regex alternative per token kind; `invert=True` keeps the matches and drops what lies between.
_PRETOKENIZE_PATTERN = r"\n|[一-鿿]|\d|[^\W\d一-鿿]+|[^\w\s]"


def _vocabulary() -> dict[str, int]:
    """Special tokens first (ids 0..13), then "\\n" (14), digits, punctuation, CJK characters, words."""
    vocab = dict(SPECIAL_TOKENS)
    cjk = [ch for ch in dict.fromkeys(SYSTEM_MESSAGE) if "一" <= ch <= "鿿"]
    for token in ["\n", *_DIGITS, *_PUNCTUATION, *cjk, *dict.fromkeys(_WORDS)]:
        vocab.setdefault(token, len(vocab))
    return vocab


def make_tiny_tokenizer(save_dir: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Build the tiny tokenizer, save it to `save_dir` and return it (bos `<s>` prepended, pad `</s>`)."""
    vocab = _vocabulary()
    if len(vocab) > 512:
        raise ValueError(f"tiny vocabulary has {len(vocab)} entries, more than 512")
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(_PRETOKENIZE_PATTERN), behavior="removed", invert=True)
    backend.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in SPECIAL_TOKENS])
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, BOS_ID)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        pad_token=EOS_TOKEN,
    )
    tokenizer.save_pretrained(str(save_dir))
    return tokenizer


VOCAB_SIZE = len(_vocabulary())
