// The player page: /player/NAME plays /hls/NAME/index.m3u8 with hls.js
// (bundled at build time), or natively where the browser speaks HLS.
"use strict";

const name = decodeURIComponent(location.pathname.replace(/^\/player\//, ""));
const source = "/hls/" + name.split("/").map(encodeURIComponent).join("/") + "/index.m3u8";
const video = document.getElementById("video");
const state = document.getElementById("state");
const errorLine = document.getElementById("error");
document.getElementById("title").textContent = name;

function fail(message) {
  errorLine.textContent = message;
  document.body.dataset.error = message;
}

video.addEventListener("error", () => fail("media error: " + (video.error && video.error.message)));
video.addEventListener("timeupdate", () => {
  state.textContent = video.currentTime.toFixed(1) + " s";
});

if (window.Hls && Hls.isSupported()) {
  const hls = new Hls();
  hls.on(Hls.Events.ERROR, (_event, data) => {
    if (data.fatal) fail("hls.js: " + data.type + " " + data.details);
  });
  hls.loadSource(source);
  hls.attachMedia(video);
} else if (video.canPlayType("application/vnd.apple.mpegurl")) {
  video.src = source;
} else {
  fail("this browser plays no HLS");
}
video.play().catch(() => {});
