"""StableTTS v1.1 text-to-speech (the published checkpoint's layout): DiT text
encoder, MAS, duration predictor and a flow-matching DiT decoder, the published
Vocos vocoder (Griffin-Lim for the tiny model). Commands live in cli.py."""
