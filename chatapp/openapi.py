"""The OpenAPI 3 document of the bots' HTTP API, served at /api/v1/openapi.json.

Written by hand next to the routes (api.py); tests/test_api.py checks that its paths and
methods are exactly the API's routes.
"""

from __future__ import annotations


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_CONVERSATION_ID = {"name": "conversation_id", "in": "path", "required": True,
                    "schema": {"type": "integer", "minimum": 1}}
_COMMON_ERRORS = {
    "401": _error("Missing or invalid key (the answer does not say which)."),
    "429": _error("Too many requests for this key (CHATAPP_API_RATE)."),
}


def document(server_url: str) -> dict:
    """The document, naming this server."""
    message_ref = {"$ref": "#/components/schemas/Message"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "chatapp bots API",
            "version": "1",
            "description": "Post and read messages as a bot. See docs/api.md.",
        },
        "servers": [{"url": server_url + "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "The OpenAPI document",
                                          "content": {"application/json": {}}}},
                },
            },
            "/conversations": {
                "get": {
                    "summary": "The conversations the bot is a member of",
                    "responses": {
                        "200": {"description": "Newest activity first", "content": {
                            "application/json": {"schema": {
                                "type": "object", "required": ["conversations"],
                                "properties": {"conversations": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Conversation"}}}}}}},
                        **_COMMON_ERRORS,
                    },
                },
            },
            "/conversations/{conversation_id}/messages": {
                "get": {
                    "summary": "Messages after an id, oldest first, one page",
                    "parameters": [
                        _CONVERSATION_ID,
                        {"name": "after", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 0, "default": 0}},
                        {"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 200,
                                    "default": 50}},
                    ],
                    "responses": {
                        "200": {"description": "One page", "content": {"application/json": {
                            "schema": {"type": "object",
                                       "required": ["messages", "has_more", "next_after"],
                                       "properties": {
                                           "messages": {"type": "array", "items": message_ref},
                                           "has_more": {"type": "boolean"},
                                           "next_after": {"type": "integer"}}}}}},
                        "400": _error("after or limit out of range"),
                        "404": _error("No such conversation, or the bot is not a member"),
                        **_COMMON_ERRORS,
                    },
                },
                "post": {
                    "summary": "Post a message as the bot",
                    "parameters": [
                        _CONVERSATION_ID,
                        {"name": "Idempotency-Key", "in": "header", "required": False,
                         "description": "Retries with the same key create one message.",
                         "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
                    ],
                    "requestBody": {"required": True, "content": {
                        "text/plain": {"schema": {"type": "string", "maxLength": 4000}},
                        "application/json": {"schema": {
                            "type": "object", "required": ["body"],
                            "properties": {"body": {"type": "string", "maxLength": 4000}}}},
                        "multipart/form-data": {"schema": {
                            "type": "object",
                            "properties": {"image": {"type": "string", "format": "binary"},
                                           "body": {"type": "string", "maxLength": 4000}}}},
                    }},
                    "responses": {
                        "201": {"description": "Posted", "content": {
                            "application/json": {"schema": message_ref}}},
                        "200": {"description": "A retry: the message already posted with this "
                                               "Idempotency-Key", "content": {
                                                   "application/json": {"schema": message_ref}}},
                        "400": _error("Empty or too long text, malformed JSON, bad key header"),
                        "404": _error("No such conversation, or the bot is not a member"),
                        "409": _error("Idempotency-Key already used in another conversation"),
                        "413": _error("Upload over the size limit"),
                        "422": _error("The upload is not an image chatapp accepts"),
                        **_COMMON_ERRORS,
                    },
                },
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}}},
                "Conversation": {"type": "object", "properties": {
                    "id": {"type": "integer"},
                    "kind": {"type": "string", "enum": ["public", "direct", "room"]},
                    "title": {"type": "string"},
                    "last_message_at": {"type": "string", "format": "date-time",
                                        "nullable": True}}},
                "Message": {"type": "object", "properties": {
                    "id": {"type": "integer"},
                    "conversation_id": {"type": "integer"},
                    "author": {"type": "object", "properties": {
                        "id": {"type": "integer"}, "name": {"type": "string"},
                        "bot": {"type": "boolean"}}},
                    "body": {"type": "string"},
                    "system": {"type": "boolean",
                               "description": "A room's membership line, not the author's words"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "edited_at": {"type": "string", "format": "date-time", "nullable": True},
                    "url": {"type": "string", "format": "uri",
                            "description": "The message's permalink"},
                    "image": {"type": "object", "nullable": True, "properties": {
                        "width": {"type": "integer"}, "height": {"type": "integer"},
                        "content_type": {"type": "string"}}}}},
            },
        },
    }
