"""Request and response bodies of the OpenAI-compatible API (the subset tunewise serves)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=32_000)


class ChatRequest(BaseModel):
    # OpenAI clients send fields we do not use (user, stream_options, ...): ignore them rather than fail.
    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=100)
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    stream: bool = False
    seed: int | None = None


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=64)
    rating: int = Field(ge=-1, le=1, description="-1 bad, 0 neutral, 1 good")
    correction: str | None = Field(None, min_length=1, max_length=32_000,
                                   description="what the answer should have been")
