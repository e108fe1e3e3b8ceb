// Pharos console: the few things a server cannot do — read a QR code with the camera
// (BarcodeDetector, where the browser has it), ask the phone for its position, and
// add or remove rows of the program editor. Everything else is server-rendered + htmx.
"use strict";

function onReady(fn) {
  if (document.readyState !== "loading") fn(); else document.addEventListener("DOMContentLoaded", fn);
}

function startScan(button) {
  const note = document.getElementById("scan-note");
  const video = document.getElementById("scan-video");
  if (!("BarcodeDetector" in window) || !navigator.mediaDevices) {
    note.textContent = button.dataset.unavailable;
    document.getElementById("device-id").focus();
    return;
  }
  const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
  navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } }).then((stream) => {
    video.hidden = false;
    video.srcObject = stream;
    video.play();
    const stop = () => { stream.getTracks().forEach((t) => t.stop()); video.hidden = true; };
    button.textContent = button.dataset.stop;
    button.onclick = stop;
    const look = () => {
      if (video.hidden) return;
      detector.detect(video).then((codes) => {
        if (codes.length) {
          stop();
          document.getElementById("device-id").value = codes[0].rawValue;
          document.getElementById("find-form").submit();
        } else { requestAnimationFrame(look); }
      }).catch(() => requestAnimationFrame(look));
    };
    look();
  }).catch(() => { note.textContent = button.dataset.unavailable; });
}

function locate(button) {
  if (!navigator.geolocation) { alert(button.dataset.unavailable); return; }
  navigator.geolocation.getCurrentPosition((position) => {
    document.getElementById("latitude").value = position.coords.latitude.toFixed(6);
    document.getElementById("longitude").value = position.coords.longitude.toFixed(6);
    button.dataset.located = "true";
  }, () => alert(button.dataset.unavailable), { enableHighAccuracy: true, timeout: 15000 });
}

function stepsChanged(form) {
  form.dispatchEvent(new Event("steps-changed", { bubbles: true }));
}

onReady(() => {
  const scan = document.getElementById("scan");
  if (scan) scan.addEventListener("click", () => startScan(scan));
  const here = document.getElementById("locate");
  if (here) here.addEventListener("click", () => locate(here));
  const add = document.getElementById("add-step");
  if (add) add.addEventListener("click", () => {
    const row = document.getElementById("step-template").content.firstElementChild.cloneNode(true);
    document.querySelector("#steps tbody").appendChild(row);
    stepsChanged(add.form);
  });
  document.addEventListener("click", (event) => {
    const target = event.target;
    if (target instanceof Element && target.classList.contains("remove-step")) {
      const form = target.closest("form");
      target.closest("tr").remove();
      stepsChanged(form);
    }
  });
});
