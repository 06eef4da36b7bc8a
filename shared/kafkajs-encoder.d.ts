/**
 * The one kafkajs internal the project touches (see `presizeRecordArrays` in kafka.ts): the encoder
 * its protocol writes requests with. Only the members used are declared.
 */
declare module 'kafkajs/src/protocol/encoder.js' {
  class Encoder {
    buf: Buffer;
    offset: number;
    get buffer(): Buffer;
    ensureAvailable(length: number): void;
    writeBufferInternal(buffer: Buffer): void;
    writeEncoderArray(value: Encoder[]): Encoder;
  }
  export default Encoder;
}
