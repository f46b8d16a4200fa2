"""A minimal reader for sentencepiece ``tokenizer.model`` files (protobuf ``ModelProto``).

Only the fields the converter needs are decoded; everything else is skipped. This avoids a dependency on
``protobuf`` (the ``sentencepiece`` wheel's ``sentencepiece_model_pb2`` needs it, and it is not a
dependency of this project). Field numbers and defaults follow ``sentencepiece_model.proto``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterator

# SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# TrainerSpec.ModelType
UNIGRAM, BPE, WORD, CHAR = 1, 2, 3, 4


@dataclass(frozen=True)
class Piece:
    piece: str
    score: float
    type: int


@dataclass
class NormalizerSpec:
    name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


@dataclass
class TrainerSpec:
    model_type: int = UNIGRAM
    vocab_size: int = 8000
    treat_whitespace_as_suffix: bool = False
    split_by_whitespace: bool = True
    split_digits: bool = False
    allow_whitespace_only_pieces: bool = False
    byte_fallback: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    unk_piece: str = "<unk>"
    bos_piece: str = "<s>"
    eos_piece: str = "</s>"
    pad_piece: str = "<pad>"


@dataclass
class ModelProto:
    pieces: list[Piece] = field(default_factory=list)
    trainer_spec: TrainerSpec = field(default_factory=TrainerSpec)
    normalizer_spec: NormalizerSpec = field(default_factory=NormalizerSpec)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint in sentencepiece model")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, object]]:
    """Yield ``(field_number, wire_type, value)``; value is an int (varint), bytes (length-delimited) or
    raw 4/8 bytes (fixed32/fixed64)."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} in sentencepiece model")
        yield number, wire, value


def _signed(value: int) -> int:
    """int32 fields are encoded as 64-bit two's complement varints."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _piece(data: bytes) -> Piece:
    piece, score, kind = "", 0.0, NORMAL
    for number, _, value in _fields(data):
        if number == 1:
            piece = value.decode("utf-8")
        elif number == 2:
            score = struct.unpack("<f", value)[0]
        elif number == 3:
            kind = value
    return Piece(piece, score, kind)


_TRAINER_FIELDS = {
    3: ("model_type", int),
    4: ("vocab_size", int),
    22: ("split_by_whitespace", bool),
    24: ("treat_whitespace_as_suffix", bool),
    25: ("split_digits", bool),
    26: ("allow_whitespace_only_pieces", bool),
    35: ("byte_fallback", bool),
    40: ("unk_id", int),
    41: ("bos_id", int),
    42: ("eos_id", int),
    43: ("pad_id", int),
    45: ("unk_piece", str),
    46: ("bos_piece", str),
    47: ("eos_piece", str),
    48: ("pad_piece", str),
}

_NORMALIZER_FIELDS = {
    1: ("name", str),
    2: ("precompiled_charsmap", bytes),
    3: ("add_dummy_prefix", bool),
    4: ("remove_extra_whitespaces", bool),
    5: ("escape_whitespaces", bool),
}


def _message(data: bytes, target: object, table: dict) -> None:
    for number, _, value in _fields(data):
        if number not in table:
            continue
        name, kind = table[number]
        if kind is str:
            value = value.decode("utf-8")
        elif kind is int:
            value = _signed(value)
        elif kind is bool:
            value = bool(value)
        setattr(target, name, value)


def parse_model(data: bytes) -> ModelProto:
    """Decode a serialised sentencepiece ``ModelProto``."""
    model = ModelProto()
    for number, _, value in _fields(data):
        if number == 1:
            model.pieces.append(_piece(value))
        elif number == 2:
            _message(value, model.trainer_spec, _TRAINER_FIELDS)
        elif number == 3:
            _message(value, model.normalizer_spec, _NORMALIZER_FIELDS)
    return model


def load_model(path: str) -> ModelProto:
    with open(path, "rb") as handle:
        return parse_model(handle.read())
