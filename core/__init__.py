"""The base every part of the platform imports: settings, the database and its migrations, the
candle intervals, the embedded server. It imports none of them."""
