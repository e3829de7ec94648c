// Package chat turns a chat conversation (OpenAI's /v1/chat/completions
// messages, Azure ML's Llama-2-chat input) into the prompt tokens of a
// Llama model, ending where the assistant's reply begins.
//
// A Template is one model family's format. Llama2 is the default; Named
// picks one by its name (in any case), FromGGUF from a GGUF file's
// tokenizer.chat_template by looking for markers, as llama.cpp's
// llm_chat_detect_template does (src/llama-chat.cpp); it does not run the
// Jinja. A template with "[INST]" is Llama 2's when it also has "<<SYS>>",
// else Mistral's.
//
// Encode's errors are *MessageError values, which name the message at
// fault by its index, so that an API can write the path in its own words.
//
// # Llama 2 (Name "llama2")
//
// Exactly Meta's reference, chat_completion in llama/generation.py of
// github.com/meta-llama/llama:
//
//	B_INST, E_INST = "[INST]", "[/INST]"
//	B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
//
// A first system message is merged into the first user message as
// B_SYS + system + E_SYS + user. Then the roles must alternate user,
// assistant, user, ..., ending with user. Each (user, assistant) pair is
//
//	[BOS] encode(f"{B_INST} {user.strip()} {E_INST} {answer.strip()} ") [EOS]
//
// and the last user message is [BOS] encode(f"{B_INST} {user.strip()} {E_INST}").
// encode is plain SentencePiece, so "[INST]" or "</s>" typed by a user are
// ordinary text, never control tokens; the BOS and EOS ids are added by
// the format only.
//
// # Mistral (Name "mistral")
//
// mistral-common's tokenizer V1, the format of Mistral-7B-Instruct v0.1
// and v0.2 and Mixtral-8x7B-Instruct, as Mistral's cookbook gives it
// (github.com/mistralai/cookbook, concept-deep-dive/tokenization/templates.md):
//
//	[BOS] encode("[INST] {user} [/INST]") encode("{answer}") [EOS] encode("[INST] {user} [/INST]") ...
//
// that is "<s>[INST] {user} [/INST]{answer}</s>[INST] {user} [/INST]",
// with each encode getting the SentencePiece space prefix ("▁[INST]",
// "▁{answer}"). Content is not stripped. The roles must alternate as for
// Llama 2; a first system message is prepended to the first user message,
// followed by "\n\n", as mistral-common does by default. [INST] and [/INST]
// are plain text, as in the V1 vocabulary; models with tokenizer V3
// (Mistral-7B-Instruct-v0.3, Mixtral-8x22B-Instruct), whose vocabularies
// make them control tokens and which want no space before [/INST], get
// this format too, which is close to but not exactly theirs.
//
// # ChatML (Name "chatml")
//
//	<|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n
//
// as llama.cpp writes it (and OpenAI's ChatML, used by OpenHermes, Qwen and
// others).
//
// # Llama 3 (Name "llama3")
//
//	<|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content.strip()}<|eot_id|> ...
//	<|start_header_id|>assistant<|end_header_id|>\n\n
//
// as Meta-Llama-3-8B-Instruct's chat template. <|begin_of_text|> is the
// template's bos_token: Encode writes the vocabulary's BOS id there.
//
// # Zephyr (Name "zephyr")
//
//	<|{role}|>\n{content}</s>\n ... <|assistant|>\n
//
// as HuggingFaceH4/zephyr-7b-beta's chat template, whose eos_token is "</s>".
// (llama.cpp's own "zephyr" writes <|endoftext|>, StableLM Zephyr's end
// marker, instead of </s>.)
//
// # Tokens of the marker formats
//
// llama.cpp renders the marker formats to one string and tokenizes it with
// special tokens parsed: every control token's written form becomes its
// id, and each run of text between them is tokenized on its own, with the
// SentencePiece space prefix, after a BOS when the vocabulary adds one.
// Encode gives the same tokens, except that it parses special tokens only
// in the markers it writes itself: a message's content is always plain
// text, so a user cannot end a turn early by typing "<|im_end|>" where that
// is a control token. (The tokenizer matches user-defined pieces in all
// text, as llama.cpp and Hugging Face do; a vocabulary that makes a marker
// user-defined rather than control cannot protect it.) A marker
// that is not a control token of the vocabulary (ChatML markers in the
// Llama 2 vocabulary, say) is plain text too, as in llama.cpp.
package chat
