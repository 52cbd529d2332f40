"""Row -> columns: a preference row normalized, checked, tokenized with its action mask and truncated.

`normalize` (what storage did to a row), `checks` (structure, then `prepare_pair`; `tool_call_ids`: tool results
answer the calls they name), `tokenization` (token ids and the per-token action index, with the action locator),
`templates` (the chat-template paths and the action-end rule), `plain_text` (standard rows), `preparation` (a whole
dataset) and `columns` (the schema the rest of `core` reads).
"""
