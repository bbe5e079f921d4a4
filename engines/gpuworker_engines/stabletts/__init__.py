"""StableTTS-architecture text-to-speech: DiT text encoder, MAS, duration
predictor and a flow-matching DiT decoder, with a Vocos-style or Griffin-Lim
vocoder. Commands live in cli.py."""
