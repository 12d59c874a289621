"""`solo serve`: an OpenAI-compatible HTTP server over one base model and many adapters.

Beside training, evaluation and merging, over the engine: ``config`` (the settings), ``service``
(the model, its adapters by name, prompts to token ids), ``scheduler`` (the continuous-batching
decode loop), ``row_cache`` (the batch's key/value cache), ``adapters`` (the registry),
``protocol`` (OpenAI's schemas and error), ``app`` (the FastAPI app) and ``responses`` (JSON
bodies and server-sent events). Each row of a batch runs its own adapter through
:mod:`solo_cli.engine.mixed`.
"""
