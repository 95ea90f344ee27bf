"""A result downloads in every output format (the Studio's "download in each format"): the media
route converts it on request; uploads and unknown extensions are not converted."""

from __future__ import annotations

import base64
import io

import numpy as np
import soundfile as sf

from cantata.audio.decode import decode_audio
from serverkit import app_client, config, new_uuid, path_of, post, task


def test_a_result_downloads_in_each_output_format_and_an_upload_only_as_itself(tmp_path, tiny_root):
    with app_client(config(tmp_path, tiny_root)) as client:
        r = post(client, [task(outputFormat="WAV", duration=30, steps=2, seed=11)])
        assert r.status_code == 200, r.text
        url = path_of(r.json()["data"][0]["audioURL"])
        wav = client.get(url)
        assert wav.headers["content-type"] == "audio/wav"
        original = decode_audio(wav.content)
        for ext, mime in ((".flac", "audio/flac"), (".mp3", "audio/mpeg"), (".ogg", "audio/ogg")):
            got = client.get(url.removesuffix(".wav") + ext)
            assert (got.status_code, got.headers["content-type"]) == (200, mime), got.text
            audio = decode_audio(got.content)
            assert abs(audio.shape[1] - original.shape[1]) <= 4800  # codec padding, under 0.1 s
        flac = sf.read(io.BytesIO(client.get(url.removesuffix(".wav") + ".flac").content), dtype="int16")[0]
        pcm = sf.read(io.BytesIO(wav.content), dtype="int16")[0]
        assert np.array_equal(flac, pcm)  # lossless to lossless: the same samples
        assert client.get(url.removesuffix(".wav") + ".txt").json()["errors"][0]["code"] == "mediaNotFound"

        up = post(client, [{"taskType": "mediaStorage", "taskUUID": new_uuid(), "operation": "upload",
                            "media": "data:audio/wav;base64," + base64.b64encode(wav.content).decode()}])
        upload = path_of(up.json()["data"][0]["mediaURL"])
        assert client.get(upload).content == wav.content
        assert client.get(upload.removesuffix(".wav") + ".flac").json()["errors"][0]["code"] == "mediaNotFound"
